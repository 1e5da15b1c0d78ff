"""Owner tags: every object fireroute creates names the state file that made it and what for.

A state file has a short hex id (its *instance*, kept in the file). A VM's objects carry
``<instance>:<vm>``: in nftables element comments as is, in link aliases and iptables
comments behind the ``fireroute:`` prefix. A bridge fireroute made carries
``<instance>:bridge:<name>``. ``gc``, ``teardown`` and ``restore`` of one state file act only
on tags with its own instance, so two state files on one host never touch each other's VMs.
Tags written before state files had ids (``fireroute:<vm>``) parse as nobody's.
"""

from __future__ import annotations

PREFIX = "fireroute:"
BRIDGE = "bridge:"
SHARED = PREFIX + "shared"
"""The one iptables rule every state file's iptables VMs share (conntrack accept)"""
HEX = frozenset("0123456789abcdef")


def tag(instance: str, name: str) -> str:
    """The tag of a VM (or ``bridge:<name>``) of the state file ``instance``."""
    return f"{instance}:{name}"


def alias(instance: str, name: str) -> str:
    """The same tag as a link alias or an iptables comment."""
    return PREFIX + tag(instance, name)


def bridge_name(bridge: str) -> str:
    return BRIDGE + bridge


_PARSED: dict[str, tuple[str, str] | None] = {}


def parse(text: str) -> tuple[str, str] | None:
    """(instance, name) of a tag, with or without the prefix; None if it is not one of ours
    (a foreign comment, the shared rule's tag, or a tag without a state file id). Each tag is
    parsed once (a diff of thousands of objects asks for the same tags many times)."""
    try:
        return _PARSED[text]
    except KeyError:
        pass
    if len(_PARSED) > 65536:
        _PARSED.clear()
    _PARSED[text] = found = _parse(text)
    return found


def _parse(text: str) -> tuple[str, str] | None:
    if text.startswith(PREFIX):
        text = text[len(PREFIX) :]
    instance, sep, name = text.partition(":")
    if not sep or not name or not instance or not set(instance) <= HEX:
        return None
    return instance, name
