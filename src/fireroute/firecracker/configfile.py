"""Merging fireroute's network settings into a Firecracker ``--config-file`` document.

The config file mirrors the API: ``"network-interfaces"`` is a list of
``NetworkInterface`` objects and ``"boot-source"`` a ``BootSource`` object whose
``boot_args`` carries the kernel ``ip=`` argument.
"""

from fireroute.firecracker.bootargs import set_ip_arg


def merge_config(existing: dict | None, iface_entry: dict, ip_arg: str | None) -> dict:
    """Return a new config with ``iface_entry`` and ``ip_arg`` merged in.

    * ``iface_entry`` replaces the entry with the same ``iface_id`` in place, or is
      appended. Another entry using the same ``host_dev_name`` is an error (one tap
      cannot back two interfaces).
    * ``ip_arg`` (a full ``ip=...`` token) replaces any kernel ``ip=`` argument in
      ``boot-source.boot_args``, all other arguments kept in order; ``None`` removes a
      kernel ``ip=`` argument if there is one.
    * ``existing`` is not modified. With ``existing=None`` the result is a minimal
      fragment: ``{"network-interfaces": [...]}`` plus ``{"boot-source": {"boot_args":
      ...}}`` when ``ip_arg`` is given (a fragment: Firecracker also needs
      ``kernel_image_path`` to boot).

    Note: a boot-source without ``boot_args`` makes Firecracker use its built-in
    default command line; once ``boot_args`` is set (here, to just the ``ip=`` token)
    those defaults no longer apply.
    """
    _check_entry(iface_entry)
    config = {} if existing is None else _copy_json(existing)
    if not isinstance(config, dict):
        raise ValueError("the existing Firecracker config must be a JSON object")

    ifaces = config.get("network-interfaces", [])
    if not isinstance(ifaces, list):
        raise ValueError("'network-interfaces' in the existing config is not a list")
    new_entry = _copy_json(iface_entry)
    merged: list = []
    replaced = False
    for entry in ifaces:
        if isinstance(entry, dict) and entry.get("iface_id") == new_entry["iface_id"]:
            if not replaced:
                merged.append(new_entry)
                replaced = True
            continue
        if isinstance(entry, dict) and entry.get("host_dev_name") == new_entry["host_dev_name"]:
            raise ValueError(
                f"tap {new_entry['host_dev_name']!r} is already used by interface "
                f"{entry.get('iface_id')!r} in the existing config"
            )
        merged.append(entry)
    if not replaced:
        merged.append(new_entry)
    config["network-interfaces"] = merged

    boot = config.get("boot-source")
    if boot is not None and not isinstance(boot, dict):
        raise ValueError("'boot-source' in the existing config is not an object")
    if boot is None:
        if ip_arg is not None:
            config["boot-source"] = {"boot_args": set_ip_arg("", ip_arg)}
    elif "boot_args" in boot or ip_arg is not None:
        current = boot.get("boot_args") or ""
        if not isinstance(current, str):
            raise ValueError("'boot-source.boot_args' in the existing config is not a string")
        boot["boot_args"] = set_ip_arg(current, ip_arg)
    return config


def _check_entry(iface_entry: dict) -> None:
    if not isinstance(iface_entry, dict):
        raise ValueError("the network interface entry must be a dict")
    for key in ("iface_id", "host_dev_name"):
        value = iface_entry.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"the network interface entry needs a non-empty {key!r}")


def _copy_json(value):
    """Deep copy of JSON-shaped data (cheaper to import than ``copy``)."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value
