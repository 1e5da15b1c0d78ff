"""Hand-off to the daemon (issue 25, src/fireroute/handoff.py), side by side: the same CLI
command and the same CNI call, in-process and through a ``fireroute serve`` started here in the
test's host namespace, give the same output, result, error and exit code; the daemon down gives
the documented error, and in-process only where the operator allows it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cni.runtime import Answer, Runtime, leftovers, state_vms
from tests.conftest import Host
from tests.kernel import test_named_addresses
from tests.kernel.test_serve import Daemon

pytestmark = pytest.mark.privileged

rt = test_named_addresses.rt  # the fixture: a Runtime (tests/cni/runtime.py) on the test's host
ALL_OPTIONS = ["egress", "dns", "tap", "guest_iface", "iface_id", "allow_peers", "publish"]


@pytest.fixture
def daemon(host: Host, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(host, tmp_path, config={"client_options": ALL_OPTIONS})
    try:
        yield d
    finally:
        d.stop()


def both(host: Host, daemon: Daemon, *argv: str, reset: tuple[str, ...] = ()) -> tuple:
    """``fireroute ARGV`` in-process, then (after ``fireroute RESET``, in-process) through
    the daemon: each run's (exit code, stdout, stderr)."""
    here = host.fireroute(*argv, check=False)
    if reset:
        host.fireroute(*reset)
    there = host.fireroute(*argv, check=False, env={"FIREROUTE_SOCKET": daemon.sock})
    return (here.returncode, here.stdout, here.stderr), (
        there.returncode,
        there.stdout,
        there.stderr,
    )


def test_cli_up_show_ls_down_print_the_same_through_the_daemon(host: Host, daemon: Daemon):
    for json_flag in ((), ("--json",)):
        up = ("up", "a", "--dns", "9.9.9.9", *json_flag)
        here, there = both(host, daemon, *up, reset=("down", "a"))
        assert here == there and here[0] == 0 and "9.9.9.9" in here[1], (here, there)
        for argv in (("show", "a"), ("show", "a", "--format", "guest-script"), ("ls",)):
            here, there = both(host, daemon, *argv, *json_flag)
            assert here == there and here[0] == 0 and "a" in here[1], (argv, here, there)
        # down: in-process, then up again here and down through the daemon
        here = host.fireroute("down", "a", "b", *json_flag, check=False)
        host.fireroute("up", "a", "--dns", "9.9.9.9")
        there = host.fireroute(
            "down", "a", "b", *json_flag, check=False, env={"FIREROUTE_SOCKET": daemon.sock}
        )
        assert (here.returncode, here.stdout, here.stderr) == (
            there.returncode, there.stdout, there.stderr
        ) and here.returncode == 0, (here, there)  # fmt: skip
    assert state_vms(host.state) == [] and leftovers(host) == []
    # the daemon did serve them (its log: one JSON line a request)
    verbs = [line["verb"] for line in daemon.lines() if "verb" in line]
    assert {"up", "get", "list", "down"} <= set(verbs), verbs


def test_cli_several_vms_with_the_flag(host: Host, daemon: Daemon):
    """``--daemon`` as the variable; several VMs; what the daemon made is what check sees."""
    p = host.fireroute("up", "x0", "x1", "--daemon", daemon.sock, "--json")
    assert [v["name"] for v in json.loads(p.stdout)] == ["x0", "x1"]
    assert host.fireroute("check").returncode == 0  # in-process sees the daemon's VMs
    p = host.fireroute("down", "--all", "--daemon", daemon.sock)
    assert p.stdout == "2 vm(s) down\n" and state_vms(host.state) == [], p.stdout


@pytest.mark.parametrize(
    "argv,code,setup",
    [
        (("up", "bad/name"), 2, ()),  # bad input: the name
        (("up", "a", "--egress", "sideways"), 2, ()),  # bad input: a value
        (("show", "nosuch"), 4, ()),  # not found
        (("down", "a", "b/c", "--json"), 2, ("up", "a")),  # bad input, and nothing goes
        (("up", "b", "--tap", "fr-a"), 3, ("up", "a", "--tap", "fr-a")),  # conflict: the tap
        (("up", "a", "--egress", "none"), 3, ("up", "a")),  # conflict: up with other options
        (("up", "x0", "x1"), 3, ("up", "x1", "--egress", "none")),  # all or nothing: no x0
    ],
)
def test_cli_errors_are_the_same_through_the_daemon(
    host: Host, daemon: Daemon, argv: tuple, code: int, setup: tuple
):
    if setup:
        host.fireroute(*setup)
    before = state_vms(host.state)
    here, there = both(host, daemon, *argv)
    assert here == there, (here, there)
    rc, out, err = there
    assert rc == code and out == "" and err.startswith("fireroute: ") and err.count("\n") == 1
    assert "Traceback" not in err and state_vms(host.state) == before
    # the positive control: the daemon serves a good request beside it
    ok = host.fireroute("up", "ok", env={"FIREROUTE_SOCKET": daemon.sock})
    assert ok.returncode == 0 and "ok" in state_vms(host.state)


def test_cli_daemon_down_is_an_error_unless_fallback_is_allowed(host: Host, tmp_path: Path):
    gone = str(tmp_path / "nobody.sock")
    p = host.fireroute("up", "a", check=False, env={"FIREROUTE_SOCKET": gone})
    assert p.returncode == 75 and p.stdout == "", p
    assert p.stderr == (
        f"fireroute: the daemon at {gone} cannot be reached: No such file or directory\n"
    )
    assert state_vms(host.state) == []  # nothing ran in-process
    p = host.fireroute("up", "a", env={"FIREROUTE_SOCKET": gone, "FIREROUTE_SOCKET_FALLBACK": "1"})
    assert p.returncode == 0 and state_vms(host.state) == ["a"]  # the operator allowed it
    p = host.fireroute("down", "a", "--state", str(host.state), "--daemon", gone, check=False)
    assert p.returncode == 2 and "not both" in p.stderr  # the daemon keeps its own state file
    p = host.fireroute("down", "a", "--dry-run", env={"FIREROUTE_SOCKET": gone})
    assert p.returncode == 0  # a dry run runs here


def test_cli_an_option_the_operator_keeps_is_refused_by_the_daemon(host: Host, daemon: Daemon):
    """The daemon's config decides what a client may give: one it keeps (``pool``) is exit
    77 naming it, nothing made; the same without it is served (the positive control)."""
    env = {"FIREROUTE_SOCKET": daemon.sock}
    p = host.fireroute("up", "a", "--pool", "10.9.0.0/16", check=False, env=env)
    assert p.returncode == 77 and "pool" in p.stderr and p.stderr.count("\n") == 1, p
    assert state_vms(host.state) == []
    assert host.fireroute("up", "a", env=env).returncode == 0 and state_vms(host.state) == ["a"]


# -- CNI --------------------------------------------------------------------------------------
def same(a: Answer, b: Answer) -> bool:
    return (a.rc, a.doc, a.stderr) == (b.rc, b.doc, b.stderr)


def test_cni_add_check_del_are_the_same_through_the_daemon(rt: Runtime, daemon: Daemon):
    ns = rt.netns("c1")
    here = rt.call("ADD", container="c1abc", netns=ns)
    assert rt.call("DEL", container="c1abc", netns=ns).rc == 0
    conf = rt.config(daemonSocket=daemon.sock)
    there = rt.call("ADD", conf, container="c1abc", netns=ns)
    assert here.rc == 0 and same(here, there), (here, there)
    assert rt.call("CHECK", conf, container="c1abc", netns=ns).rc == 0
    assert "veth0" in rt.ns_links(ns) and rt.host.fireroute("check").returncode == 0
    gone = rt.call("DEL", conf, container="c1abc", netns=ns)
    assert (gone.rc, gone.doc) == (0, {}) and leftovers(rt.host) == []
    cni = [line for line in daemon.lines() if line.get("verb") == "cni"]
    assert [line["status"] for line in cni] == [200, 200, 200], cni


@pytest.mark.parametrize(
    "keys,env,code",
    [
        ({"blockSize": "x"}, {}, 7),  # bad input: a key's type
        ({"pool": "10.0.0.0/33"}, {}, 7),  # bad input: a value only the core checks
        ({}, {"CNI_IFNAME": "a/b"}, 4),  # bad input: the environment
        ({"tapName": "tap9"}, {}, 100),  # conflict: veth0 is the first attachment's
    ],
)
def test_cni_errors_are_the_same_through_the_daemon(
    rt: Runtime, daemon: Daemon, keys: dict, env: dict, code: int
):
    ns = rt.netns("pod")
    rt.add("pod1", ns)
    before = (state_vms(rt.host.state), set(rt.ns_links(ns)))
    here = rt.call("ADD", rt.config(**keys), container="pod1", netns=ns, env=env)
    there = rt.call(
        "ADD", rt.config(**keys, daemonSocket=daemon.sock), container="pod1", netns=ns, env=env
    )
    assert same(here, there) and here.rc == 1 and here.doc["code"] == code, (here, there)
    assert (state_vms(rt.host.state), set(rt.ns_links(ns))) == before


def test_cni_daemon_down_is_try_again_unless_fallback(rt: Runtime, tmp_path: Path):
    ns = rt.netns("c1")
    gone = str(tmp_path / "nobody.sock")
    a = rt.call("ADD", rt.config(daemonSocket=gone), container="c1abc", netns=ns)
    assert a.rc == 1 and a.doc["code"] == 11 and gone in a.doc["details"], a.doc
    assert state_vms(rt.host.state) == [] and a.stderr == ""
    status = rt.call("STATUS", rt.config(daemonSocket=gone), ifname="")
    assert status.rc == 1 and status.doc["code"] == 50, status.doc  # ADD cannot work now
    version = rt.call("VERSION", rt.config(daemonSocket=gone), ifname="")
    assert version.rc == 0 and "1.1.0" in version.doc["supportedVersions"]  # a constant
    conf = rt.config(daemonSocket=gone, daemonFallback=True)
    b = rt.call("ADD", conf, container="c1abc", netns=ns)  # in-process, as allowed
    assert b.rc == 0 and len(state_vms(rt.host.state)) == 1, b
    assert rt.call("DEL", conf, container="c1abc", netns=ns).rc == 0


def test_cni_through_the_daemon_keeps_its_state_file(rt: Runtime, daemon: Daemon, tmp_path: Path):
    ns = rt.netns("c1")
    other = rt.config(daemonSocket=daemon.sock, state=str(tmp_path / "other.db"))
    a = rt.call("ADD", other, container="c1abc", netns=ns)
    assert a.rc == 1 and a.doc["code"] == 7 and "the daemon keeps" in a.doc["details"], a.doc
    assert state_vms(rt.host.state) == [] and set(rt.ns_links(ns)) == {"lo"}
    good = rt.call("ADD", rt.config(daemonSocket=daemon.sock), container="c1abc", netns=ns)
    assert good.rc == 0 and len(state_vms(rt.host.state)) == 1  # the positive control


def test_cni_through_the_daemon_is_roots_alone(rt: Runtime, tmp_path: Path):
    """A client of another uid that may use the daemon (in its group) is refused CNI calls
    (a network configuration names pools, uplinks and programs to run: the operator's), code
    50 and nothing made; root's same call through the same daemon is served."""
    import os
    import shutil
    import subprocess
    import tempfile

    from tests.cni.runtime import LAUNCHER

    where = tempfile.mkdtemp(prefix="frhand-", dir="/tmp")  # (pytest's tmp is root's alone)
    os.chmod(where, 0o755)
    group = "frhand" + os.urandom(3).hex()
    subprocess.run(["groupadd", "-g", "4243", group], check=True)
    d = None
    try:
        d = Daemon(rt.host, tmp_path, {}, group, f"{where}/fr.sock")
        ns = rt.netns("c1")
        conf = json.dumps(rt.config(daemonSocket=d.sock))
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1abc", "CNI_NETNS": ns}
        env |= {"CNI_IFNAME": "veth0", "CNI_PATH": "/usr/lib/cni"}
        argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--groups", "4243"]
        p = subprocess.run([*argv, str(LAUNCHER)], input=conf, capture_output=True, text=True,
                           env=env, timeout=60)  # fmt: skip
        doc = json.loads(p.stdout)
        assert p.returncode == 1 and doc["code"] == 50 and "root's" in doc["details"], p
        assert state_vms(rt.host.state) == [] and set(rt.ns_links(ns)) == {"lo"}
        ok = rt.call("ADD", json.loads(conf), container="c1abc", netns=ns)
        assert ok.rc == 0 and len(state_vms(rt.host.state)) == 1, ok
    finally:
        if d is not None:
            d.stop()
        subprocess.run(["groupdel", group], check=False)
        shutil.rmtree(where, ignore_errors=True)
