"""The RA responder's bookkeeping (advertise.View, advertise.Responder over a state file) and
the daemon's thread (serve/ra.py), without the kernel: the responder is given an ordinary UDP
socket instead of its raw one (tests/kernel/test_ra.py and test_ra_serve.py send real RAs)."""

from __future__ import annotations

import socket
import threading
import time
from ipaddress import IPv6Address, IPv6Network

import pytest

from fireroute.advertise import Responder, View
from fireroute.errors import UsageError
from fireroute.render import ra
from fireroute.serve import ra as serve_ra
from fireroute.serve.config import ServerConfig
from fireroute.state.store import Store
from tests.unit.test_store6 import POOL6_60, v4
from tests.unit.test_store6 import v6 as own6


def v6(name: str, ordinal: int):  # noqa: ANN201
    """A v6 VM of a given pool (one a reservation takes without recording the file's own)."""
    return own6(name, ordinal, pool6=POOL6_60)


def test_a_new_v6_vm_waits_for_its_first_advertisement_and_a_v4_one_is_never_kept():
    view = View()
    view.update([v6("a", 0), v4("b", 1)], everyone=True)
    assert set(view.vms) == {"t-a"} and view.waiting == {"t-a"}
    view.waiting.clear()  # (advertised)
    view.update([v6("a", 0), v6("c", 2)])
    assert set(view.vms) == {"t-a", "t-c"}
    assert view.waiting == {"t-c"}  # only the new one: no burst on every change


def test_a_removed_vm_is_dropped_and_no_longer_waited_for():
    view = View()
    view.update([v6("a", 0), v6("b", 1)], everyone=True)
    view.update([v6("b", 1)])
    assert set(view.vms) == {"t-b"} and view.waiting == {"t-b"}
    view.update([])
    assert view.vms == {} and view.waiting == set()


def test_a_tap_that_serves_another_prefix_now_is_advertised_on_again():
    view = View()
    view.update([v6("a", 0)], everyone=True)
    view.waiting.clear()
    view.update([v6("a", 5)])  # down and up again: another /64 on the same tap
    assert view.waiting == {"t-a"} and view.vms["t-a"].net6 == v6("a", 5).net6
    view.waiting.clear()
    view.update([v6("a", 5)], everyone=True)  # the period: every tap again
    assert view.waiting == {"t-a"}


def test_a_lookup_keeps_a_v6_vm_and_forgets_a_tap_whose_vm_is_gone_or_v4_only():
    view = View()
    view.update([v6("a", 0)], everyone=True)
    assert view.learn(v4("a", 0), "t-a") is None  # the same name back without IPv6
    assert view.vms == {} and view.waiting == set()
    vm = v6("a", 1)
    assert view.learn(vm, "t-a") is vm and view.vms == {"t-a": vm}
    assert view.learn(None, "t-a") is None and view.vms == {}
    assert view.learn(v6("x", 2), "t-a") is None  # (a VM of another tap: not this one's)


def udp() -> socket.socket:
    return socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)


def test_the_responder_follows_the_state_file_another_process_writes(tmp_path):
    """``moved`` sees another connection's commit (SQLite's data_version); the refresh after
    it adds the new VM and drops the removed one."""
    path = str(tmp_path / "state.db")
    writer = Store(path)
    r = Responder(path, sock=udp())
    try:
        r.refresh()
        assert r.vms == {} and not r.moved()
        writer.reserve([v6("a", 0), v4("b", 1)])
        assert r.moved()
        r.refresh(everyone=False)
        assert set(r.vms) == {"t-a"} and r.view.waiting == {"t-a"} and not r.moved()
        writer.remove(["a"])
        assert r.moved()
        r.refresh(everyone=False)
        assert r.vms == {} and r.view.waiting == set()
        assert r.lookup("t-b") is None  # a v4-only VM's tap
    finally:
        r.close()


def test_the_responder_waits_for_a_state_file_that_is_not_there_yet(tmp_path):
    path = str(tmp_path / "state.db")
    r = Responder(path, sock=udp())
    try:
        r.refresh()
        assert r.vms == {} and not r.moved()
        Store(path).reserve([v6("a", 0)])
        assert r.moved()
        r.refresh()
        assert set(r.vms) == {"t-a"}
    finally:
        r.close()


def test_the_daemons_thread_ends_with_stop_and_closes_its_sockets(tmp_path):
    sock = udp()
    logged: list[dict] = []
    before = threading.active_count()
    a = serve_ra.Advertiser(str(tmp_path / "state.db"), [], logged.append, sock=sock)
    a.start()
    time.sleep(0.1)
    a.changed()  # woken from any thread
    started = time.monotonic()
    a.stop()
    assert time.monotonic() - started < 2.0  # not at the next period or second
    assert not a.thread.is_alive() and threading.active_count() == before
    assert sock.fileno() == -1 and a.responder.wake.fileno() == -1
    assert a.responder.store is None
    assert logged == []


def test_the_daemon_advertises_when_its_vms_may_have_ipv6():
    assert serve_ra.wanted("auto", {"ipv6": True}, ())
    assert serve_ra.wanted("auto", {}, ("dns", "ipv6"))
    assert not serve_ra.wanted("auto", {}, ("dns",))
    assert not serve_ra.wanted("auto", {"ipv6": False}, ())
    assert serve_ra.wanted(True, {}, ())
    assert not serve_ra.wanted(False, {"ipv6": True}, ("ipv6",))


def test_the_server_configs_ra_and_dns6():
    c = ServerConfig(dns6=["2001:db8::53", "2001:db8::53", "fe80::53"])
    assert c.ra == "auto" and c.dns6 == (IPv6Address("2001:db8::53"), IPv6Address("fe80::53"))
    assert ServerConfig(ra=False).ra is False
    for bad, said in (
        ({"ra": "yes"}, 'ra must be true, false or "auto"'),
        ({"ra": 1}, 'ra must be true, false or "auto"'),
        ({"dns6": "2001:db8::53"}, "dns6 must be a list"),
        ({"dns6": ["10.0.0.1"]}, 'dns6 "10.0.0.1" is not an IPv6 address'),
        ({"dns6": ["ff02::1"]}, "is multicast"),
    ):
        with pytest.raises(UsageError, match="server config: ") as got:
            ServerConfig(**bad)  # type: ignore[arg-type]
        assert said in str(got.value)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("2001:db8::53/64", "is not an IPv6 address"),
        ("fe80::1%eth0", "is not an IPv6 address"),
        ("::", "is reserved"),
        ("::1", "is reserved"),
        ("::ffff:10.0.0.1", "is reserved"),
        ("ff02::1", "is multicast"),
        (53, "is not an IPv6 address"),
    ],
)
def test_a_dns6_server_a_guest_cannot_query_is_refused_in_one_line(value, said):
    with pytest.raises(UsageError) as got:
        ra.servers([value])
    assert said in str(got.value) and "\n" not in str(got.value)


def test_dns6_servers_keep_their_order_once_each_and_at_most_eight():
    net = IPv6Network("2001:db8::/120")
    eight = [str(net[i]) for i in range(1, 9)]
    assert ra.servers([*eight, eight[0]]) == [IPv6Address(a) for a in eight]
    with pytest.raises(UsageError, match="at most 8"):
        ra.servers([*eight, str(net[9])])


def test_fireroute_ra_refuses_a_bad_dns6_in_one_line_before_it_starts(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "FIREROUTE_STATE": str(tmp_path / "state.db")}
    argv = [sys.executable, "-m", "fireroute", "ra", "--dns6", "2001:db8::53", "--dns6", "ff02::1"]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    assert p.stderr == "fireroute: --dns6 ff02::1 is multicast: a guest cannot query it\n"
