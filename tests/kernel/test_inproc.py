"""InProcessExecutor leaves the kernel exactly as Executor (``ip``/``nft`` processes) does.

Every privileged test runs the same plan in two throwaway "host" namespaces, one through each
executor (tests/kernel/inproc_driver.py, started with ``nsenter --net``), and compares links
(``ip -d -j link``), IPv4 addresses and the nft ruleset, and the outcome (exception type and
message). Each failure case has a succeeding control beside it. Steps go to the driver with
their operations (``OpStep.ops``): those are what the in-process executor encodes. The unit
tests at the end check the netlink encodings and the parsers without root.
"""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from fireroute.kernel import inproc, nftnl, rtnl, tun
from fireroute.model import Options, Owner, Vm
from fireroute.plan.ops import Act, OpStep, delete_step, group_delete_step, regroup_step
from fireroute.plan.steps import IP, NFT, Step
from fireroute.want import nft
from fireroute.want.objects import Addr, Link, Obj
from tests.conftest import Host, make_host, skip_unless_root

DRIVER = Path(__file__).with_name("inproc_driver.py")
TABLE = "firecracker"
ID = "5ca1ab1e"


def vm(name: str, ordinal: int, **kw) -> Vm:
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    v = Vm(name, net, f"fr-{name}", "06:00:AC:10:00:%02X" % (4 * ordinal + 2), "up0", Options(**kw))
    v.owner = "5ca1ab1e"
    return v


def execute(h: Host, executor: str, steps: list[Step], verb: str = "all") -> dict:
    pickled = base64.b64encode(pickle.dumps(steps)).decode()
    req = json.dumps({"executor": executor, "verb": verb, "steps": pickled})
    p = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{h.ns}", sys.executable, str(DRIVER)],
        input=req,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout)


DROP = {"ifindex", "address", "link_index", "link_netnsid", "link", "broadcast"}
DROP |= {"bridge_id", "root_id", "designated_root", "designated_bridge"}  # from random MACs


def _clean(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: _clean(v) for k, v in doc.items() if k not in DROP and "_timer" not in k}
    if isinstance(doc, list):
        return [_clean(v) for v in doc]
    return doc


def snapshot(h: Host) -> dict:
    """What a plan can change, without what differs between any two namespaces (indexes,
    random MACs). IPv4 only: IPv6 DAD makes address listings change over time."""
    links = json.loads(h.run("ip", "-d", "-j", "link", "show").stdout)
    addrs = json.loads(h.run("ip", "-4", "-j", "addr", "show").stdout)
    rules = [x for x in h.nft() if "metainfo" not in x]
    sysctls = {
        link["ifname"]: h.run(
            "cat", f"/proc/sys/net/ipv6/conf/{link['ifname']}/disable_ipv6"
        ).stdout.strip()
        for link in links
    }
    return {
        "links": _clean(links),
        "addrs": _clean(addrs),
        "nft": rules,
        "sysctl": sysctls,
        "forward": h.forwarding(),
    }


def settled(h: Host) -> dict:
    """A snapshot once it stops changing: a tap's carrier (and so its RUNNING flag) follows
    its descriptor's close through the kernel's link watcher, up to ~1 s later (waited for
    up to 15 s on a busy machine)."""
    last = snapshot(h)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = snapshot(h)
        if now == last and all(
            "NO-CARRIER" in x["flags"] or "LOWER_UP" in x["flags"] or "UP" not in x["flags"]
            for x in now["links"]
        ):
            return now
        last = now
    return last


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    """Two hosts (namespaces): "a" for the process executor, "b" for the in-process one."""
    skip_unless_root("create network namespaces")
    a = make_host(tmp_path / "a", "a")
    b = make_host(tmp_path / "b", "b")
    ha = next(a)
    try:
        hb = next(b)
        try:
            yield ha, hb
        finally:
            b.close()
    finally:
        a.close()


def both(
    pair: tuple[Host, Host], steps: list[Step], verb: str = "all", in_process: int | None = None
) -> dict:
    """Run ``steps`` through each executor; the outcomes and the kernel states must agree.
    ``in_process``: how many groups the in-process executor must have run itself."""
    a, b = pair
    pa, pb = execute(a, "process", steps, verb), execute(b, "inproc", steps, verb)
    assert (pa["error"], pa["message"]) == (pb["error"], pb["message"])
    assert settled(a) == settled(b)
    if in_process is not None:
        assert pb["in_process"] == in_process
    return pa


def setup(pair: tuple[Host, Host], steps: list[Step]) -> None:
    """The same starting state in both, made by processes."""
    for h in pair:
        assert execute(h, "process", steps)["error"] is None


def ip(text: str, what: str = "ip step", undo: tuple[Step, ...] = ()) -> Step:
    """A line without operations (run by ``ip`` in either executor)."""
    return Step(IP, text, what, "t", undo=undo)


def link(name: str, **kw) -> Link:
    """A tap as an ``ip`` step sees it: only what ``kw`` sets is set."""
    kw = {"group": None, "up": False, "uid": 0, **kw}
    return Link(name, "tun", "t", "t", kw.pop("alias", ""), **kw)


def op(verb: str, obj: Obj) -> Step:
    """One operation as the step doing it."""
    return OpStep(IP, obj.text(verb), "ip step", "t", ops=(Act(verb, obj),))


def elements(verb: str, set_name: str, values: list[tuple[str, str | None]], what: str) -> Step:
    """Elements of a set of the table added or deleted, as one step of their operations, its
    script as the compiler writes one (a delete adds the elements first, so that it removes
    them whether they were there or not): a transaction it would not make on its own."""
    from fireroute.want.nft import NftElement

    objs = [NftElement("ip", TABLE, set_name, value, tag, "a") for value, tag in values]  # type: ignore[arg-type]
    body = ", ".join(o.tagged() if o.owner else o.value for o in objs)
    text = f"add element ip {TABLE} {set_name} {{ {body} }}\n"
    if verb == "delete":
        text += f"delete element ip {TABLE} {set_name} {{ {body} }}\n"
    return OpStep(NFT, text, what, "a", ops=[Act(verb, o) for o in objs])


def up_plan(v: Vm, fresh: bool, forwarding: bool = True) -> list[Step]:
    """The compiler's up of ``v``: its links, forwarding switched on (``forwarding``), its
    elements in a table made whole (``fresh``: that may exist) or one that stays (the sets
    they go in declared)."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import ALL, diff
    from fireroute.want.render import desired

    want = desired([v], None, ID)
    there = ("nft table", "nft set", "nft chain")  # (and a bridge: there already)
    have = {
        k: o
        for k, o in want.items()
        if not fresh and (k[0] in there or getattr(o, "link_kind", "") == "bridge")
    }
    if not forwarding:
        have[("forwarding", (None, "net.ipv4.ip_forward"))] = want[
            ("forwarding", (None, "net.ipv4.ip_forward"))
        ]
    return compile(diff(have, want, ALL, ID), before="0")


def links_of(v: Vm) -> list[Step]:
    """The steps making ``v``'s links (its tap, its addresses, its sysctls)."""
    return [s for s in up_plan(v, fresh=False, forwarding=False) if s.tool != NFT]


def elements_of(v: Vm) -> Step:
    """The transaction adding ``v``'s elements to a table that stays (its sets declared)."""
    (step,) = [s for s in up_plan(v, fresh=False) if s.tool == NFT]
    return step


def down_plan(going: list[Vm], stay: list[Vm] = ()) -> list[Step]:  # type: ignore[assignment]
    """The compiler's down of ``going`` beside ``stay`` (none: the table goes with them)."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import DELETE, Scope, diff
    from fireroute.want.render import desired, held

    have = desired([*going, *stay], None, ID)
    want = desired(list(stay), None, ID, held=held(have)) if stay else {}
    ops = diff(have, want, Scope(v.name for v in going), ID)
    return compile([o for o in ops if o.verb == DELETE], found=have)


# -- whole per-VM plans -------------------------------------------------------------------
def test_first_vm_up_tap_in_process_table_by_nft(pair) -> None:
    out = both(pair, up_plan(vm("a", 0), fresh=True), in_process=1)  # the IP group
    assert out["error"] is None
    assert pair[1].set_elements(TABLE, "taps") == ["fr-a"]


def test_second_vm_up_and_down_entirely_in_process(pair) -> None:
    setup(pair, up_plan(vm("a", 0), fresh=True))
    v = vm("b", 1, allow_peers=True, allow_metadata=True, allow_host_ports=((22, "tcp"),))
    assert both(pair, up_plan(v, fresh=False), in_process=2)["error"] is None
    assert pair[1].set_elements(TABLE, "host_ports") == [{"concat": ["fr-b", "tcp", 22]}]
    down = down_plan([v], [vm("a", 0)])
    assert both(pair, down, verb="best", in_process=2)["error"] is None
    assert pair[1].set_elements(TABLE, "taps") == ["fr-a"]


def test_egress_policy_intervals_in_process(pair) -> None:
    """Interval elements of a concatenation (``"fr-a" . 10.0.0.0/8``) as a range: the same
    set contents as nft makes, added and then deleted."""
    setup(pair, up_plan(vm("a", 0), fresh=True))
    name = f"out_allow_{nft.shard('fr-a')}"
    elems = [('"fr-a" . 198.51.100.0/24', "5ca1ab1e:a"), ('"fr-a" . 203.0.113.7', None)]
    add = elements("create", name, elems, "add ranges")
    assert add.text == (
        f'add element ip {TABLE} {name} {{ "fr-a" . 198.51.100.0/24 comment "5ca1ab1e:a", '
        '"fr-a" . 203.0.113.7 }\n'
    )
    assert both(pair, [add], in_process=1)["error"] is None
    assert len(pair[1].set_elements(TABLE, name)) == 2
    delete = elements("delete", name, elems, "delete ranges")
    assert both(pair, [delete], in_process=1)["error"] is None
    assert pair[1].set_elements(TABLE, name) == []


def test_many_down_by_group_in_process(pair) -> None:
    vms = [vm("a", 0), vm("b", 1), vm("c", 2)]
    setup(pair, up_plan(vms[0], fresh=True))
    setup(pair, [s for v in vms[1:] for s in up_plan(v, fresh=False)])
    down = down_plan(vms[:2], vms[2:])
    assert any("link del group" in s.text for s in down)
    assert both(pair, down, verb="best", in_process=2)["error"] is None
    assert set(pair[1].links()) == {"lo", "up0", "fr-c"}


def test_last_vm_down_table_by_nft(pair) -> None:
    v = vm("a", 0)
    setup(pair, up_plan(v, fresh=True))
    down = down_plan([v])
    assert both(pair, down, verb="best", in_process=1)["error"] is None
    assert not pair[1].nft()[1:]


def compiled(first: Vm, second: Vm) -> tuple[list[Step], list[Step]]:
    """plan/compiler.py's up and down of ``second`` beside ``first``: steps with operations."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import ALL, diff
    from fireroute.want.render import desired

    one, two = desired([first], None, "5ca1ab1e"), desired([first, second], None, "5ca1ab1e")
    return compile(diff(one, two, ALL, "5ca1ab1e")), compile(diff(two, one, ALL, "5ca1ab1e"))


def test_compiled_second_vm_up_and_down_from_operations(pair) -> None:
    a, b = vm("a", 0), vm("b", 1, allow_peers=True, allow_host_ports=((22, "tcp"),))
    setup(pair, up_plan(a, fresh=True))
    up, down = compiled(a, b)
    assert all(getattr(s, "ops", ()) for s in up + down if s.tool in (IP, NFT))
    assert both(pair, up, in_process=2)["error"] is None  # the ip group, the elements
    assert sorted(pair[1].set_elements(TABLE, "taps")) == ["fr-a", "fr-b"]
    assert pair[1].set_elements(TABLE, "host_ports") == [{"concat": ["fr-b", "tcp", 22]}]
    assert both(pair, up[-1:], in_process=1)["error"] is None  # elements there: no error
    assert both(pair, down, verb="best", in_process=2)["error"] is None
    assert pair[1].set_elements(TABLE, "taps") == ["fr-a"]
    assert both(pair, down[-1:], verb="best", in_process=1)["error"] is None  # gone: done


def test_compiled_elements_of_a_missing_set_go_to_nft(pair) -> None:
    a, b = vm("a", 0), vm("b", 1, allow_peers=True)
    setup(pair, [elements_of(a)])  # the sets alone, no chain uses them
    setup(pair, [Step(NFT, f"delete set ip {TABLE} taps\n", "damage")])
    up, _ = compiled(a, b)
    assert both(pair, up, in_process=1)["error"] is None  # the ip group; nft makes the set
    assert pair[1].set_elements(TABLE, "taps") == ["fr-b"]


def test_owned_tap_and_bridge_port(pair) -> None:
    owned = vm("o", 0, owner=Owner(1234, 4321))
    assert "user 1234 group 4321" in links_of(owned)[0].text
    assert both(pair, links_of(owned), in_process=1)["error"] is None
    detail = json.loads(pair[1].run("ip", "-d", "-j", "link", "show", "fr-o").stdout)[0]
    assert detail["linkinfo"]["info_data"]["user"] == 1234
    setup(pair, [ip("link add name br0 type bridge")])
    port = vm("p", 1, mode="bridge", bridge="br0", dhcp=True)
    steps = [s for s in links_of(port) if s.vm == "p"]
    assert any(" master br0 " in s.text for s in steps)
    assert both(pair, steps, in_process=1)["error"] is None
    assert pair[1].links()["fr-p"].get("master") == "br0"


def test_tap_is_the_one_ip_makes() -> None:
    """tun.add_tap's flags, checked where the test suite can see them: sysfs's tun_flags of
    an ``ip``-made tap (IFF_TAP | IFF_NO_PI; EXCL only applies to the call)."""
    assert tun.TAP_FLAGS & ~tun.IFF_TUN_EXCL == 0x1002


# -- failures, each beside its control ----------------------------------------------------
def test_tap_exists(pair) -> None:
    v = vm("a", 0)
    assert both(pair, links_of(v))["error"] is None  # control: made from nothing
    setup(pair, [ip("link del dev fr-a")])
    setup(pair, [ip("tuntap add dev fr-a mode tap user 0")])
    # in process: the IP group (it fails) and the undo of the NAT group of the same wave (the
    # elements it added taken back; the table, not made exclusively, may be another's: stays)
    out = both(pair, up_plan(v, fresh=True), in_process=2)
    assert out["error"] == "KernelError" and "Device or resource busy" in out["message"]
    assert pair[1].set_elements(TABLE, "taps") == []  # the undo ran
    assert not pair[1].addrs("fr-a")  # ip -batch stopped at the first line; nothing more


def test_device_missing(pair) -> None:
    setup(pair, [ip("tuntap add dev fr-x mode tap user 0")])
    ok = both(pair, [op("create", Addr(link("fr-x"), "10.1.0.1/30"))], in_process=1)  # control
    assert ok["error"] is None
    out = both(pair, [op("create", Addr(link("fr-nope"), "10.1.0.5/30"))], in_process=1)
    assert out["error"] == "KernelError" and 'Cannot find device "fr-nope"' in out["message"]
    tagged = link("fr-nope", group=4151, alias="x", up=True)
    assert tagged.text("set") == "link set dev fr-nope group 4151 alias x up"
    out = both(pair, [op("set", tagged)], in_process=1)
    assert out["error"] == "KernelError"
    out = both(pair, [op("set", link("fr-x", master="nobr", group=1))], in_process=1)
    assert out["error"] == "KernelError" and "Device does not exist" in out["message"]


def test_address_exists_kernel_message(pair) -> None:
    setup(pair, [ip("tuntap add dev fr-x mode tap user 0"), ip("address add 10.1.0.1/30 dev fr-x")])
    out = both(pair, [op("create", Addr(link("fr-x"), "10.1.0.1/30"))], in_process=1)
    assert out["error"] == "KernelError" and "Address already assigned" in out["message"]


def test_down_ignores_gone_and_reports_the_rest(pair) -> None:
    setup(pair, [ip("tuntap add dev fr-x mode tap user 0"), ip("address add 10.1.0.1/30 dev fr-x")])
    gone = [op("delete", link("fr-nope")), group_delete_step(777, "x"), op("delete", link("fr-x"))]
    assert [s.text for s in gone][1] == "link del group 777"
    assert both(pair, gone, verb="best", in_process=1)["error"] is None  # -force: all lines
    assert "fr-x" not in pair[1].links()
    setup(pair, [ip("tuntap add dev fr-y mode tap user 0"), ip("address add 10.2.0.1/30 dev fr-y")])
    bad = [op("create", Addr(link("fr-y"), "10.2.0.1/30")), regroup_step(link("fr-y"), 9, "x")]
    assert bad[1].text == "link set dev fr-y group 9"
    out = both(pair, bad, verb="best", in_process=1)
    assert out["error"] == "PartialFailure" and out["message"].startswith("1 step(s) failed")
    assert pair[1].links()["fr-y"]["group"] == "9"  # the line after the failure ran


def test_element_exists_and_missing(pair) -> None:
    a, b = vm("a", 0), vm("b", 1)
    setup(pair, up_plan(a, fresh=True))
    again = elements_of(a)  # add of existing elements: no error
    assert both(pair, [again], in_process=1)["error"] is None
    delete = elements("delete", "taps", [('"fr-b"', "x")], "remove")
    assert both(pair, [delete], verb="best", in_process=1)["error"] is None  # (not there)
    setup(pair, [elements_of(b)])
    assert "fr-b" in pair[1].set_elements(TABLE, "taps")
    assert both(pair, [delete], verb="best", in_process=1)["error"] is None
    assert pair[1].set_elements(TABLE, "taps") == ["fr-a"]


def test_missing_table_or_set_falls_back_to_nft(pair) -> None:
    v = vm("a", 0)
    out = both(pair, [elements_of(v)], in_process=0)  # nft makes the sets
    assert out["error"] is None and pair[1].set_elements(TABLE, "taps") == ["fr-a"]
    setup(pair, [Step(NFT, f"delete set ip {TABLE} taps\n", "damage")])
    assert both(pair, [elements_of(vm("b", 1))], in_process=0)["error"] is None


def test_named_set_lookups_read_only_the_sets_asked_for(pair) -> None:
    """A transaction looks up only the sets it writes (one request each, in one send), not a
    dump of the whole table; a missing set or table is simply not in the answer."""
    setup(pair, up_plan(vm("a", 0), fresh=True))
    probe = (
        "import json, sys\n"
        "from fireroute.kernel.nftnl import Nftnl\n"
        "n = Nftnl()\n"
        "named = n.sets('ip', sys.argv[1], ['taps', 'out_allow_0', 'nosuch', 'taps'])\n"
        "info = named['out_allow_0']\n"
        "print(json.dumps([sorted(named), info.interval, n.sets('ip', 'nosuch', ['taps']),\n"
        "                  sorted(n.sets('ip', sys.argv[1], sys.argv[2:]))]))\n"
    )
    out = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{pair[1].ns}", sys.executable, "-c", probe, TABLE,
         *nft.SETS, *nft.MAPS],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    named, interval, missing, everything = json.loads(out)
    assert named == ["out_allow_0", "taps"] and interval is True and missing == {}
    assert everything == sorted([*nft.SETS, *nft.MAPS])  # every one asked for: the control


def test_failed_nft_unwinds_in_process_taps(pair) -> None:
    v = vm("a", 0)
    setup(pair, up_plan(v, fresh=True))
    w = vm("b", 1)
    bad = elements("create", "nosuch", [('"fr-b"', None)], "add")
    out = both(pair, [*links_of(w), bad])
    assert out["error"] == "KernelError"
    assert "fr-b" not in pair[1].links()  # undone, newest first
    good = elements_of(w)  # control
    assert both(pair, [*links_of(w), good], in_process=2)["error"] is None


# -- without root: encodings and parsers --------------------------------------------------
def test_key_types_are_nfts() -> None:
    assert nftnl.key_type("ifname . ipv4_addr") == ((41 << 6) | 7, 20, [41, 7])
    assert nftnl.key_type("ipv4_addr . ifname") == ((7 << 6) | 41, 20, [7, 41])
    assert nftnl.key_type("ifname") == (41, 16, [41])
    t = nftnl.key_type("ifname . inet_proto . inet_service")
    assert t[1] == 24 and nftnl.field_ids(t[0]) == [41, 12, 13]


def test_keys_and_comments_encode() -> None:
    key = nftnl.encode_key([41, 7], ['"fr-a"', "172.16.0.2"])
    assert key == b"fr-a" + bytes(12) + bytes((172, 16, 0, 2))
    assert nftnl.encode_key([41, 12, 13], ['"t"', '"tcp"', "22"])[16:] == b"\x06\0\0\0\0\x16\0\0"
    assert nftnl.comment_udata("ab") == b"\x00\x03ab\x00"
    with pytest.raises(nftnl.Unsupported):
        nftnl.encode_key([7], ['"not an address"'])


def test_element_messages_encode() -> None:
    msg = nftnl.setelem_message("add", 7, 2, "t", "s", nftnl.element(b"\x01\x02\x03\x04", "c"))
    assert int.from_bytes(msg[:4], "little") == len(msg)
    assert int.from_bytes(msg[4:6], "little") == (10 << 8) | 12
    assert int.from_bytes(msg[6:8], "little") == 0x1 | 0x4 | 0x400  # request, ack, create
    assert msg[16:20] == b"\x02\0\0\0"  # AF_INET, version 0, res_id 0
    top = nftnl.attrs(msg, 20)
    assert top[1] == b"t\0" and top[2] == b"s\0"
    elem = nftnl.attrs(top[3], 0)[1]
    inner = nftnl.attrs(elem, 0)
    assert nftnl.attrs(inner[1], 0)[1] == b"\x01\x02\x03\x04" and inner[6] == b"\x00\x02c\x00"


def test_steps_without_element_operations_are_left_to_nft() -> None:
    """Only typed element operations are encoded: a down's element removal is (its set
    declarations from the layout, never read back from its script); a table made, a table
    deleted, a script without operations are not (nft runs them), whatever their text."""
    (removal,) = [s for s in down_plan([vm("a", 0), vm("b", 1)], [vm("c", 2)]) if s.tool == NFT]
    (ops,) = nftnl.of_steps([removal]) or [None]
    assert ops is not None and (ops.family, ops.table) == ("ip", TABLE)
    assert ops.declared is not None and ops.declared["vms"] == "ifname . ipv4_addr"
    assert [(verb, name) for verb, name, _ in ops.ops][:1] == [("add", "masq")]
    assert ops.ops[0][2] == [
        (["172.16.0.2", '"up0"'], "5ca1ab1e:a"),
        (["172.16.0.6", '"up0"'], "5ca1ab1e:b"),
    ]
    made = [s for s in up_plan(vm("a", 0), fresh=True) if s.tool == NFT]
    gone = [s for s in down_plan([vm("a", 0)]) if s.tool == NFT]
    plain = Step(NFT, f'add element ip {TABLE} taps {{ "fr-a" }}\n', "add")
    for steps in (made, gone, [plain]):
        assert steps and nftnl.of_steps(steps) is None
        with pytest.raises(nftnl.Unsupported):
            nftnl.Nftnl().run_steps(steps)


def test_every_planned_ip_step_is_encoded() -> None:
    v, o, p = (
        vm("a", 0),
        vm("o", 1, owner=Owner(5, 6)),
        vm("p", 2, mode="bridge", bridge="br0", dhcp=True),
    )
    steps = [s for x in (v, o, p) for s in links_of(x) if s.tool == IP and s.vm == x.name]
    steps += [s for s in down_plan([v]) + down_plan([v, o]) if s.tool == IP]
    steps.append(delete_step(Link("br0", "bridge", "", None, "")))
    assert len({s.text for s in steps}) >= 12
    for s in steps:
        assert inproc.encode(s) is not None, s
    veth = Link("v", "veth", "t", "t", "", peer=(None, "w"))
    for s in (
        ip("link del dev fr-a"),  # a line without its operation: ip runs it
        op("create", Link("br0", "bridge", "t", "t", "")),
        op("create", veth),
        op("set", link("x", mtu=9000)),
        op("delete", Addr(link("x"), "10.0.0.1/30")),
        op("create", Addr(link("x"), "10.0.0.1/33")),
        op("create", link("a-name-too-long-for-a-link")),
        # an operation whose step prints something else: the step's own text runs
        OpStep(IP, "link set dev fr-a group 4152", "mark", "a", ops=(Act("delete", link("fr-a")),)),
    ):
        assert inproc.encode(s) is None, s
    netns = Link("x", "tun", "t", "t", "", ns="pod", uid=0)
    assert inproc.encode(op("create", netns)) is None  # (and the executor never asks)


def test_rtnetlink_encoding_and_errors() -> None:
    assert rtnl.ifinfomsg(3, 1, 1) == bytes(4) + b"\x03\0\0\0\x01\0\0\0\x01\0\0\0"
    assert rtnl.attr(20, b"abcde") == b"\x09\x00\x14\x00abcde\0\0\0"
    assert str(rtnl.RtnlError(17)) == "RTNETLINK answers: File exists"
    assert str(rtnl.RtnlError(17, "ipv4: Address already assigned")) == (
        "Error: ipv4: Address already assigned."
    )
    assert str(rtnl.NoDevice("x")) == 'Cannot find device "x"'
    assert str(tun.TunError(16, "ioctl(TUNSETIFF)")) == (
        "ioctl(TUNSETIFF): Device or resource busy"
    )
    text = b"bad thing\0"
    tlv = (4 + len(text)).to_bytes(2, "little") + b"\x01\x00" + text + bytes(-len(text) % 4)
    body = (-22).to_bytes(4, "little", signed=True) + bytes(16) + tlv
    msg = (16 + len(body)).to_bytes(4, "little") + b"\x02\x00" + b"\x00\x03" + bytes(8) + body
    err = rtnl.parse_ack(msg)
    assert err is not None and err.errno == 22 and err.message == "bad thing"
    ack = (36).to_bytes(4, "little") + b"\x02\x00\x00\x01" + bytes(8) + bytes(20)
    assert rtnl.parse_ack(ack) is None
