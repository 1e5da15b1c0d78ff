"""Talking to Firecracker: API client, rate limiters, config-file and boot-args merging.

Submodules are imported on demand (``from fireroute.firecracker import client``) so that
the per-VM command only pays for what it uses; this package file imports nothing.
"""
