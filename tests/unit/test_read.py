"""The reader (kernel/read.py) from recorded outputs: a host namespace holding a NAT VM (with a
127.0.0.1 port), an iptables-backend VM, a bridge VM on a bridge fireroute made, a clone with
an explicit clone address and a CNI attachment, recorded by tests/kernel/test_read.py
(``FIREROUTE_UPDATE_GOLDEN=1``) from throwaway namespaces. Read back, fireroute's objects are
exactly what want/ renders for those leases (key and attributes); damage to the recording is
seen as the object it touches."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fireroute import jsontext, owner
from fireroute.errors import ConflictError
from fireroute.kernel.read import Current, Source, as_wanted, read, rule_of
from fireroute.kernel.run import Result, run
from fireroute.model import Vm
from fireroute.state.store import _vm
from fireroute.want import bridge, clone, cni, iptables, nft, shared, tap
from fireroute.want.objects import Link, Obj
from fireroute.want.tables import (
    FILTER_HEADER,
    FILTER_OUT_HEADER,
    FILTER_OUT_RULES,
    FILTER_RULES,
    NftChain,
    NftTable,
    chains,
    parts_of,
)

DATA = Path(__file__).parent / "data" / "read"
FIXTURE = DATA / "host.json"
SHAPES = {
    "nat": ("nat", "nft"),
    "iptables": ("nat", "iptables"),
    "bridge": ("bridge", "nft"),
    "clone": ("clone", "nft"),
    "cni": ("cni", "nft"),
}


# -- what want/ renders for leases, and the comparison --------------------------------------


def render(vms: list[Vm], instance: str) -> list[Obj]:
    """Every object want/ renders for ``vms``: each VM's (tap, clone, CNI attachment), its set
    elements and iptables rules, and the shared ones (bridges, tables and their chains, the
    conntrack rule), as manager and repair put them together."""
    out: list[Obj] = []
    for vm in vms:
        out += {"clone": clone.clone, "cni": cni.cni}.get(vm.mode, tap.tap)(vm)
        if vm.mode == "bridge":
            out += bridge.bridge(vm) + nft.filter_elements(vm)
        if vm.backend == "nft":
            out += nft.nat_elements(vm)
        out += iptables.rules(vm)
    needs = shared.shared(shared.Population.of(vms), instance)
    for family, table in sorted(needs.tables):
        t = NftTable(family, table, "", "", None, None)
        users = [v for v in vms if v.table == table and v.backend == "nft"]
        parts = parts_of(e.set for v in users for e in nft.nat_elements(v))  # made: what they need
        layout = (
            chains(parts)
            if family == shared.NAT
            else {
                "prerouting": (FILTER_HEADER, list(FILTER_RULES)),
                "output": (FILTER_OUT_HEADER, list(FILTER_OUT_RULES)),
            }
        )
        out += [t, *(NftChain(t, c, h, tuple(r)) for c, (h, r) in layout.items())]
    if needs.conntrack:
        out.append(iptables.conntrack())
    unique: dict[tuple, Obj] = {}
    for o in out:
        unique.setdefault((o.kind, o.key), o)  # (a bridge, an egress element: once each)
    return list(unique.values())


def fireroute_objects(cur: Current, instance: str) -> dict[tuple, Obj]:
    """What the reader found that is fireroute's: tagged for ``instance``, the tables of ours
    and their chains (shared, untagged), the shared iptables rule."""
    ours = {(o.kind, o.key): o for o in cur.ours(instance)}
    for key, o in cur.objs.items():
        if isinstance(o, NftTable | NftChain) or o.owner == owner.SHARED:
            ours[key] = o
    return ours


def compare(cur: Current, want: list[Obj], instance: str) -> list[str]:
    """Each difference between the reader's fireroute objects and ``want``, in words."""
    have = fireroute_objects(cur, instance)
    found = []
    for w in want:
        got = have.pop((w.kind, w.key), None)
        if got is None:
            found.append(f"missing {w!r}")
        elif as_wanted(got, w) != w:
            found.append(f"differs {as_wanted(got, w)!r} != {w!r}")
    return found + [f"extra {o!r}" for o in have.values()]


# -- recorded sources --------------------------------------------------------------------------


class Recording(Source):
    """The host's own source, writing down every answer (tests/kernel/test_read.py)."""

    def __init__(self) -> None:
        self.log: dict[str, list] = {"runs": [], "files": [], "dirs": [], "alive": [], "has": []}
        self.log["ids"] = []
        real = Source()

        def runner(argv: list[str], stdin: str | None) -> Result:
            res = run(argv, stdin)
            self.log["runs"].append([argv, stdin, res.rc, res.out, res.err])
            return res

        def noted(what: str, f):  # noqa: ANN001, ANN202
            def call(*args: object) -> object:
                value = f(*args)
                self.log[what].append([list(args), value])
                return value

            return call

        super().__init__(
            runner,
            noted("files", real.read),
            noted("dirs", real.listdir),
            noted("alive", real.alive),
            noted("has", lambda tool: real.has(tool) is not None),
            noted("ids", real.ids),
        )


class Replay(Source):
    """A recorded host: every question the reader asks must have been recorded."""

    def __init__(self, log: dict[str, list]) -> None:
        runs = {(tuple(a), s): Result(rc, out, err) for a, s, rc, out, err in log["runs"]}
        self.asked: list[list[str]] = []

        def runner(argv: list[str], stdin: str | None) -> Result:
            self.asked.append(argv)
            return runs[(tuple(argv), stdin)]

        def answers(what: str):  # noqa: ANN202
            table = {json.dumps(args): value for args, value in log[what]}
            return lambda *args: table[json.dumps(list(args))]

        super().__init__(
            runner,
            answers("files"),
            answers("dirs"),
            answers("alive"),
            answers("has"),
            answers("ids"),
        )


def vm_row(vm: Vm) -> list[object]:
    net = vm.net
    return [
        vm.name,
        vm.state,
        None if net is None else int(net.network_address),
        None if net is None else net.prefixlen,
        vm.tap,
        vm.mac,
        vm.uplink,
        jsontext.dumps(vm.options.identity()),
        vm.netns_name,
    ]


def leases(doc: dict) -> list[Vm]:
    vms = [_vm(tuple(r)) for r in doc["rows"]]
    for vm in vms:
        vm.owner = doc["instance"]
    return vms


def load(path: Path = FIXTURE) -> dict:
    if not path.exists():
        pytest.fail(f"{path} is missing: record it with tests/kernel/test_read.py")
    return json.loads(path.read_text())


def read_recorded(doc: dict) -> Current:
    return read(Replay(doc["log"]), leases(doc))


# -- the tests ---------------------------------------------------------------------------------


def test_the_recording_holds_one_vm_of_each_kind():
    doc = load()
    kinds = {(v.mode, v.backend) for v in leases(doc)}
    assert kinds >= {("nat", "nft"), ("nat", "iptables"), ("bridge", "nft"), ("clone", "nft")}
    assert "cni" in {v.mode for v in leases(doc)}


def test_read_equals_render_for_the_recorded_host():
    doc = load()
    vms = leases(doc)
    cur = read_recorded(doc)
    assert compare(cur, render(vms, doc["instance"]), doc["instance"]) == []
    assert cur.forwarding == "1"


@pytest.mark.parametrize("mode", ["nat", "iptables", "bridge", "clone", "cni"])
def test_each_vm_is_read_as_rendered(mode: str):
    """Per VM: every object want/ renders for it is read back, equal, and each of its read
    objects is one want/ renders."""
    doc = load()
    vms = leases(doc)
    (vm,) = [v for v in vms if (v.mode, v.backend) == SHAPES[mode]]
    vm_tag = vm.tag
    cur = read_recorded(doc)
    want = [o for o in render(vms, doc["instance"]) if o.owner == vm_tag]
    assert want, mode
    have = {k: o for k, o in fireroute_objects(cur, doc["instance"]).items() if o.owner == vm_tag}
    assert {(o.kind, o.key) for o in want} == set(have)
    for w in want:
        assert as_wanted(have[(w.kind, w.key)], w) == w


def test_kinds_read():
    """What each mode's VM is read as, by kind (the recording has each of them)."""
    doc = load()
    cur = read_recorded(doc)
    by_vm: dict[str, set[str]] = {}
    for o in cur.ours(doc["instance"]):
        by_vm.setdefault(str(o.vm), set()).add(o.kind)
    modes = {v.name: (v.mode, v.backend) for v in leases(doc)}
    for name, kinds in by_vm.items():
        mode = modes.get(name)
        if mode == ("nat", "nft"):
            assert kinds == {"link", "addr", "sysctl", "nft element"}, kinds
        elif mode == ("nat", "iptables"):
            assert kinds == {"link", "addr", "sysctl", "iptables rule"}, kinds
        elif mode and mode[0] == "clone":
            assert {"netns", "link", "addr", "route", "sysctl", "nft table", "nft chain"} <= kinds
        elif mode and mode[0] == "cni":
            assert {"link", "addr", "tc redirect", "sysctl", "nft element"} <= kinds


def _damaged(doc: dict, argv_has: str, change) -> dict:  # noqa: ANN001
    """The recording with the output of the first run whose argv holds ``argv_has`` changed."""
    doc = copy.deepcopy(doc)
    for entry in doc["log"]["runs"]:
        if argv_has in " ".join(entry[0]):
            entry[3] = change(entry[3])
            return doc
    raise AssertionError(f"no run of {argv_has}")


def _root_links(doc: dict, change) -> dict:  # noqa: ANN001
    def edit(out: str) -> str:
        links = json.loads(out)
        change(links)
        return json.dumps(links)

    return _damaged(doc, "ip -j -d addr show", edit)  # (the root namespace's: read first)


def _one(links: list[dict], vm: Vm) -> dict:
    return next(d for d in links if d["ifname"] == vm.tap)


def test_damage_is_seen_as_the_object_it_touches():
    doc = load()
    vms, instance = leases(doc), doc["instance"]
    nat = next(v for v in vms if v.mode == "nat" and v.backend == "nft")
    want = render(vms, instance)

    gone = _root_links(doc, lambda ls: ls.remove(_one(ls, nat)))
    found = compare(read_recorded(gone), want, instance)
    # the tap and what goes with it: its address, its sysctls (not read for a link not there)
    kinds = ["missing Link", "missing Addr", "missing Sysctl", "missing Sysctl"]
    assert [f.split("(")[0] for f in found] == kinds and all(nat.tap in f for f in found)

    def unowned(ls: list[dict]) -> None:
        del _one(ls, nat)["linkinfo"]["info_data"]["user"]

    found = compare(read_recorded(_root_links(doc, unowned)), want, instance)
    assert len(found) == 1 and found[0].startswith("differs Link"), found

    def down(ls: list[dict]) -> None:
        _one(ls, nat)["flags"].remove("UP")

    found = compare(read_recorded(_root_links(doc, down)), want, instance)
    assert len(found) == 1 and "False" in found[0], found

    ipv6 = copy.deepcopy(doc)
    for entry in ipv6["log"]["files"]:
        if entry[0] == [f"/proc/sys/net/ipv6/conf/{nat.tap}/disable_ipv6"]:
            entry[1] = "0"
    # (with IPv6 on, the reader reads the tap's addr_gen_mode too: the kernel's default)
    ipv6["log"]["files"].append([[f"/proc/sys/net/ipv6/conf/{nat.tap}/addr_gen_mode"], "0"])
    found = compare(read_recorded(ipv6), want, instance)
    assert found == [f"missing Sysctl{(None, f'net/ipv6/conf/{nat.tap}/disable_ipv6', '1')}"]


def test_an_element_lost_and_a_stray_one():
    doc = load()
    vms, instance = leases(doc), doc["instance"]
    nat = next(v for v in vms if v.mode == "nat" and v.backend == "nft")
    want = render(vms, instance)

    def drop_taps(out: str) -> str:
        items = json.loads(out)
        for item in items["nftables"]:
            s = item.get("set")
            if s and s["name"] == "taps":
                s["elem"] = [e for e in s.get("elem", []) if nat.tap not in json.dumps(e)] + [
                    {"elem": {"val": "fr-zz", "comment": f"{instance}:zz"}}
                ]
        return json.dumps(items)

    cur = read_recorded(_damaged(doc, "nft -j list table ip", drop_taps))
    found = compare(cur, want, instance)
    assert sorted(found) == sorted(
        [
            f"missing NftElement{(None, 'ip', nat.table, 'taps', chr(34) + nat.tap + chr(34))}",
            f"extra NftElement{(None, 'ip', nat.table, 'taps', chr(34) + 'fr-zz' + chr(34))}",
        ]
    ), found


def test_every_question_was_recorded_and_nothing_else_asked():
    """The reader asks the same processes of a recorded host as of the real one (no more:
    the replay would have failed), in one pass: one ``ip addr`` per namespace, one route
    listing per namespace read, one tc batch per CNI namespace."""
    doc = load()
    src = Replay(doc["log"])
    read(src, leases(doc))
    asked = [" ".join(a) for a in src.asked]
    assert sum("addr show" in a for a in asked) == 1 + len(
        [v for v in leases(doc) if v.mode in ("clone", "cni")]
    )
    assert sum(a.startswith("iptables-nft-save") for a in asked) == 1


def test_peers_are_resolved_across_namespaces():
    doc = load()
    cur = read_recorded(doc)
    c = next(v for v in leases(doc) if v.mode == "clone")
    host_end = cur.get("link", (None, c.tap))
    far = cur.get("link", (c.netns, clone.NS_VETH))
    assert isinstance(host_end, Link) and isinstance(far, Link)
    assert host_end.peer == (c.netns, clone.NS_VETH) and far.peer == (None, c.tap)


def test_what_the_kernel_makes_itself_is_left_out():
    """lo's 127.0.0.1/8, connected routes, a sysctl at its default: none is an object."""
    doc = load()
    cur = read_recorded(doc)
    kinds = {(o.kind, getattr(o, "cidr", None)) for o in cur.objs.values()}
    assert ("addr", "127.0.0.1/8") not in kinds
    for o in cur.objs.values():
        if o.kind == "route":
            assert "/" in o.dst or o.dst == "default"  # type: ignore[attr-defined]
        if o.kind == "sysctl":
            assert o.value == "1"  # type: ignore[attr-defined]
    assert any(v == "0" for v in cur.sysctls.values())  # read, but no object


def test_saved_rules_parse_to_rendered_rules():
    r = iptables.conntrack()
    quoted = r.saved.replace(owner.SHARED, f'"{owner.SHARED}"')
    got = rule_of("filter", quoted)
    assert got == r and got.owner == owner.SHARED and got.text("delete") == r.text("delete")
    spaced = '-A INPUT -m comment --comment "a b" -j ACCEPT'
    assert rule_of("filter", spaced).spec == '-m comment --comment "a b" -j ACCEPT'
    assert rule_of("filter", spaced).owner == ""


def test_table_ownership_is_a_question_to_the_read():
    doc = load()
    nat = next(v for v in leases(doc) if v.mode == "nat")
    cur = read_recorded(doc)
    assert cur.table_is_ours("ip", nat.table) and cur.table_is_ours("bridge", nat.table)
    assert not cur.table_is_ours("ip", "elsewhere")  # absent: none of ours, none foreign
    foreign = _damaged(doc, "nft -t list ruleset ip", lambda out: out + "table ip elsewhere {\n}\n")
    with pytest.raises(ConflictError, match='"ip elsewhere" exists and was not created'):
        read_recorded(foreign).table_is_ours("ip", "elsewhere")
