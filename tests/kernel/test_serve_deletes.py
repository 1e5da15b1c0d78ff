"""Deletes through the daemon answered once the kernel has removed the links (serve/unlink.py):
no "removed" before the tap, its nft elements and its record are gone, a refused deletion
reaches its caller, and a stop waits for the deletions still in the kernel."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from fireroute.kernel import nsexec, rtnl
from fireroute.serve.unlink import EarlyRtnl
from tests.conftest import Host
from tests.kernel.test_serve import Daemon, check_clean, daemon  # noqa: F401 - a fixture

pytestmark = pytest.mark.privileged

CLIENTS, EACH = 8, 4


def link_exists(host: Host, name: str) -> bool:
    """Whether ``name`` resolves in the host namespace now (read from a thread inside it)."""

    def probe() -> bool:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    return nsexec.in_namespace(f"/var/run/netns/{host.ns}", probe)  # type: ignore[arg-type]


def in_taps_set(host: Host, tap: str) -> bool:
    """Whether the tap is an element of the table's ``taps`` set (no table: it is not)."""
    p = host.run("nft", "-j", "list", "set", "ip", "firecracker", "taps", check=False)
    if p.returncode != 0:
        assert "No such file or directory" in p.stderr, p.stderr  # the last VM took the table
        return False
    return f'"{tap}"' in p.stdout


def test_every_removed_answer_comes_after_the_link_is_gone(daemon: Daemon, host: Host):  # noqa: F811
    c = daemon.client()
    taps = {}
    for k in range(CLIENTS):
        for i in range(EACH):
            status, vm = c.call("PUT", f"/vms/v{k}-{i}", {})
            assert status == 200, vm
            taps[vm["name"]] = vm["tap"]
    assert all(link_exists(host, tap) for tap in taps.values())  # the probe sees a link
    assert in_taps_set(host, taps["v0-0"])  # and an element
    errors: list[str] = []

    def client(k: int) -> None:
        try:
            deletes(k)
        except Exception as exc:  # noqa: BLE001 - collected, asserted below
            errors.append(repr(exc))

    def deletes(k: int) -> None:
        conn = daemon.client()
        for i in range(EACH):
            name = f"v{k}-{i}"
            answer = conn.call("DELETE", f"/vms/{name}")
            if link_exists(host, taps[name]):  # read first: the moment of the answer
                errors.append(f"{name}: answered {answer} while {taps[name]} exists")
            if answer != (200, {"removed": True}):
                errors.append(f"{name}: {answer}")
            if in_taps_set(host, taps[name]):
                errors.append(f"{name}: answered while its nft element is there")
            if host.fireroute("show", name, check=False).returncode == 0:
                errors.append(f"{name}: answered while its record is there")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert "fr-" not in host.run("ip", "-br", "link").stdout
    check_clean(host)
    # the names are free at once: up again with the same names (and taps), then down again
    for name in taps:
        status, vm = c.call("PUT", f"/vms/{name}", {})
        assert status == 200 and vm["tap"] == taps[name], vm
    for name in taps:
        assert c.call("DELETE", f"/vms/{name}") == (200, {"removed": True})
        assert c.call("DELETE", f"/vms/{name}") == (200, {"removed": False})  # idempotent
    check_clean(host)


def test_a_stop_right_after_deletes_exits_cleanly(daemon: Daemon, host: Host):  # noqa: F811
    """The worker drains its deletions still in the kernel on stop (unlink.py ``drain``,
    tested below): the daemon exits 0, with no late failure and nothing left."""
    c = daemon.client()
    for i in range(16):
        assert c.call("PUT", f"/vms/s{i}", {})[0] == 200
    for i in range(16):
        assert c.call("DELETE", f"/vms/s{i}") == (200, {"removed": True})
    daemon.stop()  # at once: the last deletions are still in the kernel
    assert daemon.proc.returncode == 0, daemon.log.read_text()
    assert "failed after its links" not in daemon.log.read_text()
    assert "fr-" not in host.run("ip", "-br", "link").stdout
    check_clean(host)


def make_taps(host: Host, names: list[str], group: int) -> None:
    script = "".join(
        f"tuntap add dev {n} mode tap\nlink set dev {n} group {group}\n" for n in names
    )
    subprocess.run(["ip", "-n", host.ns, "-batch", "-"], input=script, text=True, check=True)


def in_host(host: Host, fn):  # noqa: ANN001, ANN201
    return nsexec.in_namespace(f"/var/run/netns/{host.ns}", fn)


def test_early_deletion_returns_when_the_links_are_gone_before_the_kernel_is_done(
    host: Host, tmp_path: Path
):
    """The kernel fact it rests on, and its refusals: a group's links are gone when
    ``del_group`` returns while (at least once in five) the request is still in the kernel;
    an empty group and a missing link are refused to the caller as ``ip`` refuses them."""
    nl = EarlyRtnl()
    still_in_kernel = 0
    for n in range(5):
        names = [f"tg{n}-{i}" for i in range(4)]
        if n % 2:  # moved into the group by ip: any link of the group's notification will do
            make_taps(host, names, 77)
        else:  # moved by the channel itself: a notification of one of these links
            make_taps(host, names, 0)
            for name in names:
                in_host(host, lambda name=name: nl.set_link(rtnl.ifindex(name), group=77))
            assert len(nl.grouped[77]) == 4
        in_host(host, lambda: nl.del_group(77))
        still_in_kernel += sum(not d.finished.is_set() for d in nl.pending)
        assert not any(link_exists(host, name) for name in names)
        make_taps(host, names[:1], 0)  # the name is free again at once
        host.run("ip", "link", "del", names[0])
    assert still_in_kernel >= 1
    make_taps(host, ["one"], 0)
    index = int(in_host(host, lambda: rtnl.ifindex("one")))
    in_host(host, lambda: nl.del_link(index))
    assert not link_exists(host, "one")
    waiting = list(nl.pending)
    nl.drain()  # (the worker's on stop): every request still in the kernel has ended
    assert all(d.finished.is_set() and not d.thread.is_alive() for d in waiting)
    assert nl.pending == [] and nl.late_failures == []
    with pytest.raises(rtnl.RtnlError) as refused:  # nothing in the group: ip's ENODEV
        in_host(host, lambda: nl.del_group(78))
    assert refused.value.errno == errno.ENODEV
    with pytest.raises(rtnl.RtnlError) as missing:
        in_host(host, lambda: nl.del_link(index))
    assert missing.value.errno == errno.ENODEV
    nl.close()
    assert json.loads(host.run("ip", "-j", "link").stdout)  # the namespace itself is fine
