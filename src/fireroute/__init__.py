"""fireroute: host networking for Firecracker microVMs. The Python API is
:class:`fireroute.Host` (see :mod:`fireroute.api`); importing the package loads nothing else
until it is used."""

__version__ = "0.1.0"
__all__ = ["Host", "Vm", "__version__"]


def __getattr__(name: str) -> object:  # fireroute.Host without importing the API at start-up
    if name in ("Host", "Vm"):
        from fireroute import api

        return getattr(api, name)
    raise AttributeError(f"module 'fireroute' has no attribute {name!r}")
