"""The lab behind ``fireroute demo``: a throwaway sandbox of network namespaces (sandbox.py),
a tiny guest image (guest.py) booted on a tap under QEMU or Firecracker (vmm.py), and the demo
that drives them (demo.py). The end-to-end tests and the benchmarks use the same sandbox and
guests; harnesses only the tests use live under tests/ (podman: tests/cni/podman.py)."""
