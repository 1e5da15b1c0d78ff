"""``check`` as the diff in words (repair/report.py), on the recorded host of
tests/unit/test_read.py (a NAT VM, an iptables VM, a bridge guest, a clone, a CNI attachment):
clean as recorded (the control), and each kind of damage to the recording said where check
has always said it, in its words."""

from __future__ import annotations

import copy
import json

from fireroute.repair.picture import picture
from fireroute.repair.report import report
from tests.unit.test_read import Replay, _damaged, _one, _root_links, leases, load


def checked(doc: dict, names: list[str] | None = None, before: str | None = "0") -> dict:
    vms = leases(doc)
    pic = picture(Replay(doc["log"]), vms, doc["instance"], before)
    shown = [v for v in vms if v.name in names] if names else vms
    return report(pic, pic.diff(), shown, bool(names)).as_json()


def vm_of(doc: dict, mode: str, backend: str = "nft"):  # noqa: ANN201
    return next(v for v in leases(doc) if (v.mode, v.backend) == (mode, backend))


def said(found: dict) -> dict[str, list[str]]:
    """Only what is not empty: per VM, per shared key, the orphans."""
    out = {k: v for k, v in {**found["vms"], **found["shared"]}.items() if v}
    return {**out, **({"orphans": found["orphans"]} if found["orphans"] else {})}


def test_the_recorded_host_is_clean():
    found = checked(load())
    assert found["ok"] and said(found) == {}
    names = {v.name for v in leases(load())}
    assert set(found["vms"]) == names
    assert list(found["shared"]) == [
        "nftables table ip firecracker",
        "nftables table bridge firecracker",
        "iptables",
    ]


def test_a_tap_gone_is_said_once_under_its_vm():
    doc = load()
    nat = vm_of(doc, "nat")
    found = checked(_root_links(doc, lambda ls: ls.remove(_one(ls, nat))))
    assert said(found) == {nat.name: [f'tap "{nat.tap}" is missing']}


def test_a_tap_down_unowned_or_retagged():
    doc = load()
    nat = vm_of(doc, "nat")

    def damage(ls: list[dict]) -> None:
        d = _one(ls, nat)
        d["flags"].remove("UP")
        d["ifalias"] = "someone-else"

    found = checked(_root_links(doc, damage))
    assert said(found) == {
        nat.name: [
            f'tap "{nat.tap}" is down',
            f'tap "{nat.tap}" does not carry owner tag fireroute:{doc["instance"]}:{nat.name}',
        ]
    }

    def unowned(ls: list[dict]) -> None:
        del _one(ls, nat)["linkinfo"]["info_data"]["user"]

    (line,) = said(checked(_root_links(doc, unowned)))[nat.name]
    assert line.startswith(f'tap "{nat.tap}" is owned by nobody, not uid 0')


def test_ipv6_on_and_forwarding_off():
    doc = copy.deepcopy(load())
    nat = vm_of(doc, "nat")
    for entry in doc["log"]["files"]:
        if entry[0] == [f"/proc/sys/net/ipv6/conf/{nat.tap}/disable_ipv6"]:
            entry[1] = "0"
        if entry[0] == ["/proc/sys/net/ipv4/ip_forward"]:
            entry[1] = "0"
    # (with IPv6 on, the reader reads the tap's addr_gen_mode too: the kernel's default)
    doc["log"]["files"].append([[f"/proc/sys/net/ipv6/conf/{nat.tap}/addr_gen_mode"], "0"])
    found = said(checked(doc))
    assert found[nat.name] == [
        f'IPv6 is on for tap "{nat.tap}" (guests could reach the host over it)',
        "IPv4 forwarding is off",
    ]
    assert all(lines == ["IPv4 forwarding is off"] for n, lines in found.items() if n != nat.name)


def _listing(doc: dict, change) -> dict:  # noqa: ANN001
    """The NAT table's text listing changed (chains and sets are read from it)."""
    for entry in doc["log"]["runs"]:
        if entry[0] == ["nft", "list", "table", "ip", "firecracker"]:
            entry[3] = change(entry[3])
    return doc


def test_a_foreign_rule_a_foreign_chain_and_a_set_of_nobody_are_the_tables():
    doc = copy.deepcopy(load())

    def damage(text: str) -> str:
        text = text.replace(
            "chain guest_in {\n", "chain guest_in {\n\t\tmeta mark 0x0000002a counter\n", 1
        )
        extra = "\tset evil {\n\t\ttype ifname\n\t}\n\n\tchain evil {\n\t}\n"
        return text.replace('\tcomment "fireroute"\n', f'\tcomment "fireroute"\n{extra}', 1)

    found = said(checked(_listing(doc, damage)))
    assert found == {
        "nftables table ip firecracker": [
            'chain guest_in of ip firecracker: has foreign rule "meta mark 0x0000002a counter"',
            "chain evil of ip firecracker is not fireroute's",
            "set evil of ip firecracker is not fireroute's",
        ]
    }


def taps(doc: dict, edit) -> dict:  # noqa: ANN001
    """The recording with the NAT table's ``taps`` elements (JSON records) edited."""

    def change(out: str) -> str:
        items = json.loads(out)
        for item in items["nftables"]:
            s = item.get("set")
            if s and s["name"] == "taps":
                s["elem"] = edit(s.get("elem", []))
        return json.dumps(items)

    return _damaged(doc, "nft -j list table ip", change)


def test_an_element_lost_and_this_state_files_leftover():
    doc = load()
    nat = vm_of(doc, "nat")
    instance = doc["instance"]
    extra = [{"elem": {"val": "fr-zz", "comment": f"{instance}:zz"}}, {"elem": {"val": "fr-yy"}}]
    damaged = taps(doc, lambda es: [e for e in es if nat.tap not in json.dumps(e)] + extra)
    found = said(checked(damaged))
    assert found == {
        nat.name: [f'nft set firecracker/taps lacks "{nat.tap}"'],
        "nftables table ip firecracker": [
            'nft set firecracker/taps has "fr-yy", which no lease asks for (no vm)'
        ],
        "orphans": ['element "fr-zz" of set ip firecracker taps has no lease'],
    }


def test_iptables_rule_missing_out_of_order_and_the_shared_rule_below():
    doc = load()
    ipt = vm_of(doc, "nat", "iptables")
    lines: list[str] = []

    def save(out: str) -> str:
        lines[:] = out.splitlines()
        return out

    _damaged(doc, "iptables-nft-save", save)
    mine = [x for x in lines if f":{ipt.name} " in x.replace('"', "") + " "]
    forward = [x for x in mine if x.startswith("-A FORWARD")]
    gone = _damaged(doc, "iptables-nft-save", lambda out: out.replace(forward[1] + "\n", ""))
    found = said(checked(gone))
    assert found == {ipt.name: [f"iptables rule missing: {forward[1].replace(chr(34), '')}"]}

    def swap(out: str) -> str:
        a, b = forward[0], forward[1]
        return out.replace(a, "\0").replace(b, a).replace("\0", b)

    (line,) = said(checked(_damaged(doc, "iptables-nft-save", swap)))[ipt.name]
    assert line.startswith(f'iptables rules of vm "{ipt.name}" in FORWARD are out of order: "')

    shared = next(x for x in lines if "fireroute:shared" in x)

    def below(out: str) -> str:
        out = out.replace(shared + "\n", "")
        return out.replace(forward[-1] + "\n", f"{forward[-1]}\n{shared}\n")

    found = said(checked(_damaged(doc, "iptables-nft-save", below)))
    (line,) = found["iptables"]
    assert line.startswith("shared iptables rule is out of order: ")
    assert set(found) == {"iptables"}


def test_a_cni_namespace_gone_is_said_once():
    doc = copy.deepcopy(load())
    doc["log"]["alive"] = [[args, False] for args, _ in doc["log"]["alive"]]
    cni = vm_of(doc, "cni")
    found = said(checked(doc))
    assert list(found) == [cni.name]
    (line,) = found[cni.name]
    assert "cannot be opened from here" in line  # (its host end is still there)


def test_named_vms_only_and_no_orphans():
    doc = load()
    ipt = vm_of(doc, "nat", "iptables")
    leftover = {"elem": {"val": "fr-zz", "comment": f"{doc['instance']}:zz"}}
    damaged = taps(doc, lambda es: [*es, leftover])
    assert checked(damaged, [ipt.name])["ok"]  # the other VM's and the orphan: not asked
    found = checked(damaged)
    assert found["orphans"] == ['element "fr-zz" of set ip firecracker taps has no lease']


def test_an_iptables_rule_there_twice_is_said_and_written_again():
    from fireroute.repair.heal import healing

    doc = load()
    ipt = vm_of(doc, "nat", "iptables")
    lines: list[str] = []

    def twice(out: str) -> str:
        lines[:] = [x for x in out.splitlines() if f":{ipt.name} " in x.replace('"', "") + " "]
        inputs = [x for x in lines if x.startswith("-A INPUT")]
        return out.replace(inputs[-1] + "\n", f"{inputs[-1]}\n{inputs[0]}\n")

    damaged = _damaged(doc, "iptables-nft-save", twice)
    (line,) = said(checked(damaged))[ipt.name]
    assert line.startswith(f'iptables rules of vm "{ipt.name}" in INPUT are out of order: "')
    assert line.endswith('" is there twice')
    pic = picture(Replay(damaged["log"]), leases(damaged), damaged["instance"], "0")
    steps = healing(pic, pic.diff()).steps
    assert steps and all(s.tool == "iptables" for s in steps)
    pic = picture(Replay(doc["log"]), leases(doc), doc["instance"], "0")  # the control
    assert healing(pic, pic.diff()).steps == []


def test_forwarding_left_on_is_no_orphan_of_a_file_without_leases():
    """Another state file's lease may want it (its tap deleted, say): check of a file with no
    leases says nothing of it, though gc's diff would set it back (the control)."""
    from fireroute.kernel.read import Current
    from fireroute.plan.diff import DELETE
    from fireroute.repair.picture import Picture
    from fireroute.want.objects import Forwarding

    cur = Current()
    cur.forwarding = "1"
    pic = Picture(cur, {}, "5ca1ab1e", [])
    fwd = Forwarding("1", "0")
    pic.have[(fwd.kind, fwd.key)] = fwd
    ops = pic.diff()
    assert [(op.verb, op.obj.kind) for op in ops] == [(DELETE, "forwarding")]
    assert report(pic, ops, [], False).as_json() == {
        "ok": True,
        "vms": {},
        "shared": {},
        "orphans": [],
    }
