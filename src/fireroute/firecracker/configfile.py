"""Merging fireroute's network settings into a Firecracker ``--config-file`` document.

The config file mirrors the API: ``"network-interfaces"`` is a list of
``NetworkInterface`` objects and ``"boot-source"`` a ``BootSource`` object whose
``boot_args`` carries the kernel ``ip=`` argument.
"""

from collections.abc import Collection, Mapping

from fireroute.firecracker.bootargs import get_ip_arg, set_ip_arg


def merge_config(
    existing: dict | None,
    iface_entry: dict,
    ip_arg: str | None,
    other_taps: Collection[str] = frozenset(),
    other_guests: Mapping[str, str] | None = None,
) -> dict:
    """Return a new config with ``iface_entry`` and ``ip_arg`` merged in.

    * ``iface_entry`` replaces the entry with the same ``iface_id`` in place, or is
      appended. Another entry using the same ``host_dev_name`` is an error (one tap
      cannot back two interfaces).
    * ``ip_arg`` (a full ``ip=...`` token) replaces any kernel ``ip=`` argument in
      ``boot-source.boot_args``, all other arguments kept in order; ``None`` removes a
      kernel ``ip=`` argument if there is one.
    * An entry with the same ``iface_id`` whose tap is in ``other_taps`` (another vm's) is
      an error rather than replaced: a second vm joins with an ``iface_id`` of its own.
    * The ``ip=`` argument of another interface (another ``device`` field) is kept: the
      kernel takes one, and the first vm's stays (``ip_arg_applied`` tells the caller).
    * An ``ip=`` argument for the same guest interface that configures another interface's
      address is an error rather than replaced (the first interface would boot
      unconfigured): one that carries another vm's guest address (``other_guests``: guest
      IP -> vm name), or any other one when ``iface_entry`` is added beside the interfaces
      already there instead of replacing one of them.
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
    merged, added_beside = _merge_interfaces(ifaces, _copy_json(iface_entry), other_taps)
    config["network-interfaces"] = merged
    _merge_boot_args(config, ip_arg, added_beside, other_guests or {})
    return config


def _merge_interfaces(
    ifaces: list, new_entry: dict, other_taps: Collection[str]
) -> tuple[list, bool]:
    """``ifaces`` with ``new_entry`` in the place of the entry with its ``iface_id`` (or
    appended), and whether it was added beside other interfaces instead of replacing one."""
    merged: list = []
    replaced = False
    for entry in ifaces:
        if isinstance(entry, dict) and entry.get("iface_id") == new_entry["iface_id"]:
            if entry.get("host_dev_name") in other_taps:
                raise ValueError(
                    f"interface {new_entry['iface_id']!r} of the existing config is tap "
                    f"{entry.get('host_dev_name')!r}, another vm's: give this vm another "
                    "--iface-id (and --guest-iface) to add it as a second interface"
                )
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
    added_beside = not replaced and bool(merged)
    if not replaced:
        merged.append(new_entry)
    return merged, added_beside


def _merge_boot_args(
    config: dict, ip_arg: str | None, added_beside: bool, other_guests: Mapping[str, str]
) -> None:
    """Put ``ip_arg`` into ``config``'s ``boot-source.boot_args`` (in place)."""
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
        held = _ip_device(current)
        if ip_arg is None or held is None or held == _ip_device(ip_arg):
            if ip_arg is not None and held is not None:
                _check_not_anothers(current, ip_arg, added_beside, other_guests)
            boot["boot_args"] = set_ip_arg(current, ip_arg)
        # else: the kernel takes one ip= argument, and it configures another interface (the
        # first vm's); this one's is left to the guest script


def ip_arg_applied(config: dict, ip_arg: str | None) -> bool:
    """Whether a merged ``config`` boots with ``ip_arg`` as its kernel ``ip=`` argument
    (False when the argument configures another interface and was kept)."""
    boot = config.get("boot-source")
    current = boot.get("boot_args") if isinstance(boot, dict) else None
    return get_ip_arg(current or "") == ip_arg


def _check_not_anothers(
    current: str, ip_arg: str, added_beside: bool, other_guests: Mapping[str, str]
) -> None:
    """Refuse to replace an ``ip=`` argument for the same guest interface that belongs to
    another interface: the kernel takes one, and the other interface would boot without an
    address."""
    held = get_ip_arg(current)
    if held is None or _ip_client(held) == _ip_client(ip_arg):
        return
    owner = other_guests.get(_ip_client(held))
    if owner is None and not added_beside:
        return  # the interface this entry replaces had it: it is this interface's own
    device = _ip_device(ip_arg) or "the first interface"
    whose = f'vm "{owner}"' if owner is not None else "another interface of the config"
    raise ValueError(
        f"its ip= argument would replace {held!r}, which configures {device} for {whose}, "
        "and the kernel takes one ip= argument: bring this vm up with another "
        "--guest-iface (eth1, ...) and configure that interface with its guest script "
        "(fireroute show VM --format guest-script)"
    )


def _ip_client(token: str) -> str:
    """The guest address field of an ``ip=`` token."""
    return token[3:].split(":")[0]


def _ip_device(args: str) -> str | None:
    """The device field of the ip= argument in a kernel command line, if there is one."""
    for token in args.split():
        if token.startswith("ip="):
            fields = token[3:].split(":")
            return fields[5] if len(fields) > 5 else ""
    return None


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
