"""The daemon's CNI ADD/DEL start no process in the container's namespace (issue 25): its
links, sysctls and tc redirects are made on a thread that entered the namespace
(kernel/nsexec.py), and what they leave is what the plugin's own ``nsenter … ip/tc/sysctl``
processes leave. The daemon runs with ``nsenter``, ``tc`` and ``sysctl`` replaced by programs
that fail, so an ADD that still used one would fail."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cni.runtime import Runtime, leftovers, state_vms
from tests.conftest import Host
from tests.kernel import test_named_addresses
from tests.kernel.test_serve import Daemon

pytestmark = pytest.mark.privileged

rt = test_named_addresses.rt
STUBBED = ("nsenter", "tc", "sysctl")
DROP = {"ifindex", "link_index", "link_netnsid", "operstate", "link", "dev", "handle"}


class NoProcessDaemon(Daemon):
    """``fireroute serve`` whose PATH finds failing ``nsenter``, ``tc`` and ``sysctl``."""

    def start(self) -> None:
        stubs = Path(self.log).parent / "stubs"
        stubs.mkdir(exist_ok=True)
        for name in STUBBED:
            (stubs / name).write_text(f"#!/bin/sh\necho 'stub {name} ran' >&2\nexit 1\n")
            (stubs / name).chmod(0o755)
        env = {**os.environ, "PATH": f"{stubs}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
        real = subprocess.run(["which", "nsenter"], capture_output=True, text=True).stdout
        self.argv[0] = real.strip()
        real_popen = subprocess.Popen
        subprocess.Popen = lambda argv, **kw: real_popen(argv, env=env, **kw)  # type: ignore
        try:
            super().start()
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]


@pytest.fixture
def daemon(host: Host, tmp_path: Path) -> Iterator[Daemon]:
    d = NoProcessDaemon(host, tmp_path)
    try:
        yield d
    finally:
        d.stop()


def _read(text: str) -> object:
    """JSON without what differs between two makings of the same objects (indexes)."""
    return json.loads(
        text or "[]",
        object_hook=lambda d: {k: v for k, v in d.items() if k not in DROP and "_timer" not in k},
    )


def snapshot(rt: Runtime, ns: str, host_end: str) -> dict:
    """The container namespace's links, IPv4 addresses, IPv6 switches, qdiscs and filters, and
    the host end of the veth, without what differs between two makings (indexes)."""
    deadline = time.monotonic() + 15  # a tap nobody opened loses its carrier a moment later
    while time.monotonic() < deadline:  # (linkwatch; waited for as long as a busy machine takes)
        links = json.loads(rt.in_ns(ns, "ip", "-d", "-j", "link", "show").stdout)
        if all("NO-CARRIER" in x["flags"] for x in links if x["ifname"] not in ("lo", "veth0")):
            break
        time.sleep(0.05)
    out: dict[str, object] = {"links": _read(json.dumps(links))}
    out["addrs"] = _read(rt.in_ns(ns, "ip", "-4", "-j", "addr", "show").stdout)
    out["qdiscs"] = _read(rt.in_ns(ns, "tc", "-j", "qdisc", "show").stdout)
    for link in links:
        name = link["ifname"]
        argv = ("tc", "-j", "-d", "filter", "show", "dev", name, "ingress")
        out[f"filters {name}"] = _read(rt.in_ns(ns, *argv).stdout)
        path = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
        out[f"disable_ipv6 {name}"] = rt.in_ns(ns, "cat", path, check=False).stdout
    there = rt.host.run("ip", "-d", "-j", "link", "show", "dev", host_end).stdout
    out["host end"] = _read(there)
    return out


def _host_end(doc: dict) -> str:
    return next(i["name"] for i in doc["interfaces"] if "sandbox" not in i)


def test_daemon_cni_add_makes_what_the_processes_make(rt: Runtime, daemon: Daemon):
    ns = rt.netns("c1")
    here = rt.call("ADD", container="c1abc", netns=ns)
    assert here.rc == 0, here
    end = _host_end(here.doc)
    before = snapshot(rt, ns, end)
    assert rt.call("DEL", container="c1abc", netns=ns).rc == 0
    assert leftovers(rt.host) == [] and set(rt.ns_links(ns)) == {"lo"}
    conf = rt.config(daemonSocket=daemon.sock)
    there = rt.call("ADD", conf, container="c1abc", netns=ns)
    assert (there.rc, there.doc) == (here.rc, here.doc), (here, there)
    after = snapshot(rt, ns, end)
    for key in before:
        assert after[key] == before[key], key
    # the redirects carry frames: the filters are there, on both ends, to each other
    assert '"to_dev": "tap0"' in json.dumps(after["filters veth0"]) and "mirred" in json.dumps(
        after[f"filters {next(n for n in rt.ns_links(ns) if n not in ('lo', 'veth0'))}"]
    )
    assert rt.host.fireroute("check").returncode == 0
    assert rt.call("CHECK", container="c1abc", netns=ns).rc == 0  # (its reads: processes)
    gone = rt.call("DEL", conf, container="c1abc", netns=ns)
    assert (gone.rc, gone.doc) == (0, {}) and leftovers(rt.host) == []
    assert set(rt.ns_links(ns)) == {"lo"} and state_vms(rt.host.state) == []
    assert "stub" not in daemon.log.read_text()


def test_daemon_cni_add_refused_in_the_namespace_as_the_process_is(rt: Runtime, daemon: Daemon):
    """A link in the way in the container's namespace: the same error from both, nothing left;
    beside it, the same ADD into a clean namespace works through the daemon."""
    ns = rt.netns("busy")
    rt.in_ns(ns, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "other0")
    here = rt.call("ADD", container="b1", netns=ns)
    conf = rt.config(daemonSocket=daemon.sock)
    there = rt.call("ADD", conf, container="b1", netns=ns)
    assert here.rc == 1 and (there.rc, there.doc["code"]) == (here.rc, here.doc["code"])
    assert "File exists" in there.doc["details"], there.doc
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []
    assert set(rt.ns_links(ns)) == {"lo", "veth0", "other0"}
    clean = rt.netns("clean")
    ok = rt.call("ADD", conf, container="b2", netns=clean)
    assert ok.rc == 0 and "veth0" in rt.ns_links(clean), ok
    assert rt.call("DEL", conf, container="b2", netns=clean).rc == 0
    assert leftovers(rt.host) == [] and "stub" not in daemon.log.read_text()


def test_a_namespace_that_cannot_be_entered_is_left_to_the_process(
    rt: Runtime, host: Host, tmp_path: Path
):
    """CNI_NETNS a file that is no namespace: the thread cannot enter it, so nothing changes
    and ``nsenter`` runs and says why: the same answer as in-process, nothing left. Beside it
    (the control) a real namespace through the same daemon works."""
    d = Daemon(host, tmp_path)
    try:
        fake = tmp_path / "not-a-netns"
        fake.write_text("")
        here = rt.call("ADD", container="f1", netns=str(fake))
        there = rt.call("ADD", rt.config(daemonSocket=d.sock), container="f1", netns=str(fake))
        assert here.rc == 1 and (there.rc, there.doc) == (here.rc, here.doc), (here, there)
        assert "nsenter" in here.doc["details"], here.doc  # (the process's own message)
        assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []
        ns = rt.netns("ok")
        ok = rt.call("ADD", rt.config(daemonSocket=d.sock), container="f2", netns=ns)
        assert ok.rc == 0 and "veth0" in rt.ns_links(ns), ok
    finally:
        d.stop()
