"""fireroute as a CNI plugin: the ``fireroute`` program acts as one when ``CNI_COMMAND`` is in
its environment (:mod:`fireroute.entry`). protocol.py reads a runtime's request and writes
the answers in the version asked, plugin.py runs ADD, DEL, CHECK, STATUS, GC and VERSION on
the Python API (an attachment is a VM of mode ``cni``), and ipam.py delegates addressing to
the IPAM plugin a configuration names."""

MAX_STDIN = 1 << 20
"""the most bytes of configuration read from stdin (a network configuration with a
``prevResult`` is a few kilobytes): more is refused, code 7, before it is parsed (here, not in
protocol.py: the program's entry reads stdin before it knows whether the plugin runs here)"""
