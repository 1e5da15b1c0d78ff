"""Tests for fireroute.firecracker, against a spec-validating Firecracker stand-in."""
