"""What the operator fixes and what a client may ask for.

The server config is a JSON file (``--config FILE``)::

    {
      "state": "/var/lib/fireroute/state.db",
      "fixed": {"uplink": "eth0", "pool": "172.16.0.0/16", "backend": "nft"},
      "client_options": ["allow_host_ports", "dns", "mac"],
      "tenant_prefix": true,
      "max_body": 65536,
      "client_timeout": 10,
      "request_timeout": 30,
      "max_connections": 256,
      "ra": "auto",
      "dns6": ["2001:db8::53"]
    }

``fixed`` options apply to every VM and no client may give them; ``client_options`` are the
only options a client may give (default: :data:`CLIENT_DEFAULT`); everything else takes fireroute's
default. By default the mode and every address (guest, gateway, range, DHCP, clone address,
bridge, MAC, tap name), the host's own settings (uplink, pool, block size, table, backend, tap
owner, FORWARD-policy fix, MTU) and every opening towards what is not the client's own VM
(host ports, metadata, peers, ``allow_out``, published ports) are the operator's: a client
naming one is refused (403) and nothing changes. A client of uid 0 is held to the same lists
(the daemon has one policy; root can use the CLI or the Python API beside it). With
``tenant_prefix`` a client that is not root may only name, see and remove VMs whose names
start with ``u<its uid>-``. The state file, and every path and program fireroute uses, are the
server's alone: no request field names one.

``client_timeout`` bounds each wait for a client's next bytes; ``request_timeout`` the whole
of one request, from the moment the server waits for it on a connection until it has arrived
(a client that sends a byte now and then within ``client_timeout`` is cut off all the same);
``max_connections`` the connections open at once (each is a thread): one more is answered 503
and closed at once.

``ra`` says whether the daemon sends router advertisements to its v6 guests (serve/ra.py):
``"auto"`` (the default) when its VMs may have IPv6 (``ipv6`` fixed on, or a client option),
``true`` always (v6 VMs made by the CLI in the same state file), ``false`` never (a
``fireroute ra`` runs beside it). ``dns6``: the IPv6 DNS servers its advertisements name
(RDNSS), as ``fireroute ra --dns6``.

``ready``: how many NAT VMs of the ``fixed`` options the daemon keeps made ahead (default 0:
none; fireroute/ready.py). A client's ``up`` that gives no option of its own claims one (its
lease renamed, no device made) and the daemon makes another when idle.
"""

from __future__ import annotations

import json

from fireroute import request
from fireroute.errors import UsageError

CLIENT_DEFAULT = ("guest_iface", "iface_id", "dns", "egress", "deny_out")
"""what a client may give by default: what concerns its own guest alone (the name of its
interface in the guest, Firecracker's iface id, its resolvers) or only narrows what it reaches
(its egress policy; ``allow_out`` widens it: the operator's, or it could undo a fixed
``egress``)"""
KEYS = (
    "state",
    "fixed",
    "client_options",
    "tenant_prefix",
    "max_body",
    "client_timeout",
    "request_timeout",
    "max_connections",
    "firecracker_dir",
    "ra",
    "dns6",
    "ready",
)
ATTACH_TIMEOUT = 10.0
"""seconds a daemon client's Firecracker may take per request, at most"""
ATTACH_SETTINGS = (
    "iface_id",
    "timeout",
    "mtu",
    "boot_source",
    "rx_rate",
    "tx_rate",
    "burst",
    "rx_ops",
    "tx_ops",
    "mmds",
    "mmds_version",
    "mmds_address",
)


class ServerConfig:
    __slots__ = KEYS

    def __init__(
        self,
        state: str | None = None,
        fixed: dict[str, object] | None = None,
        client_options: list[str] | tuple[str, ...] = CLIENT_DEFAULT,
        tenant_prefix: bool = False,
        max_body: int = 65536,
        client_timeout: float = 10.0,
        request_timeout: float = 30.0,
        max_connections: int = 256,
        firecracker_dir: str | None = None,
        ra: bool | str = "auto",
        dns6: list[str] | tuple[str, ...] = (),
        ready: int = 0,
    ) -> None:
        self.state = state
        if not isinstance(fixed, dict | None):
            raise UsageError("server config: fixed must be an object of options")
        if not isinstance(client_options, list | tuple):
            raise UsageError("server config: client_options must be a list of option names")
        self.fixed = dict(fixed or {})
        self.client_options = tuple(client_options)
        self.tenant_prefix = tenant_prefix
        self.max_body = max_body
        self.client_timeout = client_timeout
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.firecracker_dir = firecracker_dir
        """the directory of Firecracker API sockets the server attaches VMs to (None: it
        attaches none); a client names a socket in it, which it must own"""
        if not (isinstance(ra, bool) or ra == "auto"):
            raise UsageError('server config: ra must be true, false or "auto"')
        if not isinstance(dns6, list | tuple):
            raise UsageError("server config: dns6 must be a list of IPv6 addresses")
        from fireroute.render import ra as render_ra

        self.dns6 = tuple(render_ra.servers(dns6, "server config: dns6"))
        self.ra = ra
        """whether the daemon advertises (serve/ra.py ``wanted``), and the RDNSS servers"""
        for name in (*self.fixed, *self.client_options):
            if name not in request.FIELDS:
                raise UsageError(f'server config: unknown option "{name}"')
        both = set(self.fixed) & set(self.client_options)
        if both:
            raise UsageError(
                f'server config: "{sorted(both)[0]}" is both fixed and a client option'
            )
        request.options(self.fixed)  # the fixed options must themselves be valid
        if not (isinstance(max_body, int) and 1024 <= max_body <= 1 << 24):
            raise UsageError("server config: max_body must be 1024..16777216 bytes")
        if not (isinstance(client_timeout, int | float) and 0 < client_timeout <= 600):
            raise UsageError("server config: client_timeout must be 0..600 seconds")
        if not (isinstance(request_timeout, int | float) and 0 < request_timeout <= 3600):
            raise UsageError("server config: request_timeout must be 0..3600 seconds")
        if isinstance(client_timeout, bool) or isinstance(request_timeout, bool):
            raise UsageError("server config: a timeout is a number of seconds")
        if not (
            isinstance(max_connections, int)
            and not isinstance(max_connections, bool)
            and 1 <= max_connections <= 65536
        ):
            raise UsageError("server config: max_connections must be 1..65536")
        self.ready = check_ready(ready, self.fixed)
        """how many NAT VMs of the fixed options (no client option) the daemon keeps made
        ahead (fireroute/ready.py)"""

    @classmethod
    def load(cls, path: str) -> ServerConfig:
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as exc:
            raise UsageError(f"cannot read server config {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"invalid JSON in server config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"server config {path}: expected a JSON object")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise UsageError(f'server config {path}: unknown key "{unknown[0]}"')
        return cls(**data)

    def options(self, body: dict[str, object]) -> dict[str, object]:
        """A client's options with the operator's fixed ones: Forbidden-worthy fields raise
        :class:`NotAllowed` (naming the field)."""
        for name in body:
            if name not in request.FIELDS:
                raise UsageError(f'unknown option "{name}" (options: {", ".join(request.FIELDS)})')
            if name in self.fixed:
                raise NotAllowed(f'option "{name}" is fixed by the server')
            if name not in self.client_options:
                raise NotAllowed(
                    f'option "{name}" is the operator\'s: clients of this server may not set it '
                    "(its config's client_options may allow it)"
                )
        return {**body, **self.fixed}

    def vmm_socket(self, uid: int, name: object) -> int:
        """The Firecracker API socket a client named, opened: a name directly in
        ``firecracker_dir`` (no ``/``; a symlink there is not followed), a socket, and the
        client's own (root's: any). Returns an ``O_PATH`` descriptor to connect through
        (``/proc/self/fd/N``), so that the socket checked is the one used even if the name is
        replaced meanwhile; the caller closes it. NotAllowed otherwise, naming why."""
        import os
        import stat

        where = self.firecracker_dir
        if where is None:
            raise NotAllowed("this server attaches no Firecracker (its firecracker_dir is unset)")
        if not isinstance(name, str) or not name:
            raise UsageError('attach needs "socket": the name of an API socket in ' + where)
        if "/" in name or name in (".", ".."):
            raise NotAllowed(f'socket "{name}" is not a name in {where}')
        try:
            dir_fd = os.open(where, os.O_PATH | os.O_DIRECTORY)
        except OSError as exc:
            raise NotAllowed(f"{where}: {exc.strerror}") from None
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            raise NotAllowed(f'no socket "{name}" in {where}') from None
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        why = None
        if not stat.S_ISSOCK(st.st_mode):
            why = "not a socket"
        elif uid != 0 and st.st_uid != uid:
            why = f"not uid {uid}'s"
        if why:
            os.close(fd)
            raise NotAllowed(f'"{name}" in {where} is {why}')
        return fd

    def may_name(self, uid: int, name: str) -> bool:
        return not self.tenant_prefix or uid == 0 or name.startswith(f"u{uid}-")


def check_ready(ready: object, fixed: dict[str, object]) -> int:
    """The ``ready`` key: a count, and NAT VMs of one shape (no fixed option naming one VM)."""
    if not (isinstance(ready, int) and not isinstance(ready, bool) and 0 <= ready <= 1024):
        raise UsageError("server config: ready must be 0..1024 VMs")
    one = sorted({"tap", "mac", "guest", "publish"} & set(fixed))  # (a host port: one VM's)
    if ready and (fixed.get("mode", "nat") != "nat" or one):
        why = f'fixed "{one[0]}" names one VM' if one else "its fixed mode is not nat"
        raise UsageError(f"server config: ready VMs are NAT VMs of one shape ({why})")
    return ready


class NotAllowed(UsageError):
    """A client asked for something the operator did not allow (HTTP 403)."""
