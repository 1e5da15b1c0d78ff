"""The reader and check's words for a NAT VM with IPv6 (issue 24 step 6), on the host recorded
by tests/kernel/test_read6.py (tests/unit/data/read/host6.json): VM "a" with IPv6 (its /64
kept in the recording beside the rows) and VM "b" without. As recorded the read equals what
want/ renders and check says nothing (the control); each IPv6 object taken from the recording,
as the kernel would show it gone or changed, is said once, under "a" (IPv6 forwarding under
the VMs with IPv6 only, the ip6 table's parts under its shared key), and "b" stays clean."""

from __future__ import annotations

import copy
import json
from ipaddress import IPv6Network
from pathlib import Path

from fireroute.model import Vm
from fireroute.repair.collect import leftovers, sweep
from fireroute.repair.heal import healing
from fireroute.repair.picture import Picture, picture
from fireroute.repair.report import report
from tests.unit.test_read import DATA, Replay, _damaged, _one, _root_links, leases, load
from tests.unit.test_repair_check import said

FIXTURE6 = DATA / "host6.json"
A_TAP, ROUTE6, GATEWAY = "fr-a", "fd3c:9a1e:52b0::/64", "fe80::1:9a1e:52b0:0/64"
SYSCTL = "/proc/sys/net/ipv6/conf/{}/{}"
FORWARDING6 = "/proc/sys/net/ipv6/conf/all/forwarding"


def load6(path: Path = FIXTURE6) -> dict:
    return load(path)


def leases6(doc: dict) -> list[Vm]:
    vms = leases(doc)
    for v in vms:
        if v.name in doc["net6"]:
            v.net6 = IPv6Network(doc["net6"][v.name])
    return vms


def seen(doc: dict, before6: str | None = None) -> Picture:
    return picture(Replay(doc["log"]), leases6(doc), doc["instance"], "0", before6)


def checked(doc: dict) -> dict:
    pic = seen(doc)
    return said(report(pic, pic.diff(), pic.leases, False).as_json())


def file_set(doc: dict, path: str, value: str | None) -> dict:
    """The recording with a /proc value read otherwise."""
    doc = copy.deepcopy(doc)
    for entry in doc["log"]["files"]:
        if entry[0] == [path]:
            entry[1] = value
            return doc
    raise AssertionError(f"{path} was not read")


def without_route6(doc: dict) -> dict:
    def drop(out: str) -> str:
        return json.dumps([r for r in json.loads(out) if r["dst"] != ROUTE6])

    return _damaged(doc, "ip -6 -j route show", drop)


def tap_addrs(doc: dict, change) -> dict:  # noqa: ANN001
    """The recording with a's tap's addresses changed."""

    def edit(ls: list[dict]) -> None:
        d = next(x for x in ls if x["ifname"] == A_TAP)
        d["addr_info"] = change(d["addr_info"])

    return _root_links(doc, edit)


def inet6(cidr: str, **kw: object) -> dict:
    """An IPv6 address as ``ip -j addr show`` lists it."""
    local, prefixlen = cidr.split("/")
    return {"family": "inet6", "local": local, "prefixlen": int(prefixlen), "scope": "link", **kw}


# -- the tests -------------------------------------------------------------------------------


def test_the_recorded_v6_host_reads_as_rendered_and_check_says_nothing():
    doc = load6()
    pic = seen(doc)
    assert pic.diff() == []
    found = report(pic, [], pic.leases, False).as_json()
    assert found["ok"] and list(found["shared"]) == [
        "nftables table ip firecracker",
        "nftables table ip6 firecracker",
    ]
    # what the reader found of a's IPv6 side: its sysctls, its gateway address, its route
    cur = pic.cur
    assert cur.addrs(A_TAP) == {"172.16.0.1/30", GATEWAY}
    gateway = cur.get("addr", (None, A_TAP, GATEWAY))
    assert gateway is not None and gateway.nodad  # type: ignore[attr-defined]
    assert cur.get("route", (None, ROUTE6)) is not None
    assert cur.forwarding6 == "1" and cur.tables("ip6") == ["firecracker"]
    for name in ("disable_ipv6", "addr_gen_mode"):
        s = cur.get("sysctl", (None, f"net/ipv6/conf/{A_TAP}/{name}"))
        assert s is not None and s.owner.endswith(":a")
    # the control: b's tap (IPv6 off) has no IPv6 address and its disable_ipv6 is 1
    assert cur.addrs("fr-b") == {"172.16.0.5/30"}
    assert cur.get("sysctl", (None, "net/ipv6/conf/fr-b/disable_ipv6")).value == "1"  # type: ignore[union-attr]


def test_the_gateway_address_lost():
    found = checked(tap_addrs(load6(), lambda ai: [a for a in ai if a["family"] != "inet6"]))
    assert found == {"a": [f'"{A_TAP}" lacks address {GATEWAY} (its guest\'s IPv6 gateway)']}


def test_the_route_to_its_block_lost():
    found = checked(without_route6(load6()))
    assert found == {"a": [f"host route {ROUTE6} dev {A_TAP} is missing"]}


def test_ipv6_switched_off_on_its_tap():
    """disable_ipv6 back to 1: the kernel drops the tap's IPv6 address and route with it."""
    doc = file_set(load6(), SYSCTL.format(A_TAP, "disable_ipv6"), "1")
    doc = without_route6(tap_addrs(doc, lambda ai: [a for a in ai if a["family"] != "inet6"]))
    found = checked(doc)
    assert found == {
        "a": [
            f'IPv6 is off on tap "{A_TAP}" (its guest has no IPv6)',
            f'"{A_TAP}" lacks address {GATEWAY} (its guest\'s IPv6 gateway)',
            f"host route {ROUTE6} dev {A_TAP} is missing",
        ]
    }


def test_addr_gen_mode_found_0():
    found = checked(file_set(load6(), SYSCTL.format(A_TAP, "addr_gen_mode"), "0"))
    line = f'addr_gen_mode of tap "{A_TAP}" is 0, not 1 (the kernel would give it a link-local'
    assert list(found) == ["a"] and len(found["a"]) == 1 and found["a"][0].startswith(line)


def test_the_kernels_own_link_local_address_is_said_and_restore_deletes_it():
    own = "fe80::8c2e:5ff:fe1a:4b3c/64"
    doc = tap_addrs(load6(), lambda ai: [*ai, inet6(own)])
    found = checked(doc)
    assert found == {
        "a": [
            f'tap "{A_TAP}" has link-local address {own} beside its gateway, which no lease '
            "asks for (the kernel adds one when carrier comes before addr_gen_mode is 1)"
        ]
    }
    pic = seen(doc)
    texts = [s.text for s in healing(pic, pic.diff()).steps]
    assert any(f"address del {own} dev {A_TAP}" in t for t in texts), texts

    # the control: on b's tap (IPv6 off: disable_ipv6 1) an IPv6 address is not read at all
    # (the kernel holds none there), and on the healthy host restore has nothing to do
    def b_too(ls: list[dict]) -> None:
        _one(ls, leases6(doc)[1])["addr_info"].append(inet6(own))

    assert checked(_root_links(load6(), b_too)) == {}
    clean = seen(load6())
    assert healing(clean, clean.diff()).steps == []


def test_an_ip6_element_lost():
    def drop(out: str) -> str:
        items = json.loads(out)
        for item in items["nftables"]:
            s = item.get("set")
            if s and s["name"] == "taps":
                s["elem"] = [e for e in s.get("elem", []) if A_TAP not in json.dumps(e)]
        return json.dumps(items)

    found = checked(_damaged(load6(), "nft -j list table ip6", drop))
    assert found == {"a": [f'nft set ip6 firecracker/taps lacks "{A_TAP}"']}


def test_the_ip6_table_gone_is_said_once():
    doc = copy.deepcopy(load6())
    for entry in doc["log"]["runs"]:
        if entry[0] == ["nft", "-t", "list", "ruleset", "ip6"]:
            entry[3] = ""
    found = checked(doc)
    assert found == {"a": ['nftables table "ip6 firecracker" is missing']}


def test_an_ip6_chain_lost_is_the_tables():
    def drop(text: str) -> str:
        start = text.index("\tchain guest_in {")
        return text[:start] + text[text.index("\t}\n", start) + 3 :]

    found = checked(_damaged(load6(), "nft list table ip6", drop))
    assert found == {
        "nftables table ip6 firecracker": ["chain guest_in of ip6 firecracker is missing"]
    }


def test_ipv6_forwarding_off_is_said_under_the_vms_with_ipv6():
    found = checked(file_set(load6(), FORWARDING6, "0"))
    assert found == {"a": ["IPv6 forwarding is off"]}  # (not under b: it has no IPv6)


def test_ipv6_forwarding_no_vm_needs_goes_back_to_what_it_was():
    """Nothing wanted any more (every lease gone: gc's and teardown's diff), IPv6 forwarding
    found on goes back to the value recorded before the first VM with IPv6, as IPv4's does;
    with no record it is left as found (the control)."""
    doc = load6()

    def back(before6: str | None) -> list[str]:
        pic = seen(doc, before6)
        gone = Picture(pic.cur, {}, doc["instance"], [])
        gone.have = pic.have
        return [op.obj.text(op.verb) for op in gone.diff() if op.obj.kind == "forwarding"]

    assert back("0") == ["net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]
    assert back(None) == ["net.ipv4.ip_forward=0"]


def test_route_destinations_as_want_keys_them():
    from fireroute.kernel.read import _dst

    assert _dst("default", True) == "::/0" and _dst("default", False) == "default"
    assert (
        _dst("2001:db8::1", True) == "2001:db8::1/128" and _dst("10.0.0.1", False) == "10.0.0.1/32"
    )
    assert _dst(ROUTE6, True) == ROUTE6


def test_gc_of_the_v6_vms_lease_forgotten_takes_its_ipv6_with_it():
    """gc with a's lease gone (b's kept): a's tap, its ip6 elements, the ip6 table (no VM with
    IPv6 is left) and IPv6 forwarding back to its record, while b and IPv4's stay; the
    control: with a's lease kept, gc has nothing to collect."""
    doc = load6()
    vms = leases6(doc)
    b = [v for v in vms if v.name == "b"]
    pic = picture(Replay(doc["log"]), b, doc["instance"], "0", "0")
    texts = [s.text for s in sweep(pic)]
    assert f"link del dev {A_TAP}" in texts and not [t for t in texts if "fr-b" in t]
    assert "net.ipv6.conf.all.forwarding=0" in texts and "net.ipv4.ip_forward=0" not in texts
    assert [op.obj.key for op in leftovers(pic.diff()) if op.obj.kind == "nft table"] == [
        (None, "ip6", "firecracker")
    ]
    assert sweep(seen(doc, before6="0")) == []


def test_a_kernel_link_local_that_reads_like_a_gateway_is_no_v6_tap():
    """A clone's host veth (IPv6 on, the kernel's own link-local address) whose address the
    kernel made from a MAC starting 02:01 reads ``fe80::1:11ff:fe2b:32``, the form of a NAT
    VM's own gateway: it is not taken for the tap of a VM with IPv6 (a gateway is added
    without DAD, the kernel's address never is), and check stays clean. The control: the
    recorded address, and the same address added ``nodad``, which makes it one."""
    from tests.unit.test_read import load
    from tests.unit.test_repair_check import checked as checked4

    def with_address(local: str, nodad: bool) -> dict:
        doc = load()
        for run in doc["log"]["runs"]:
            if run[0] == ["ip", "-j", "-d", "addr", "show"]:
                links = json.loads(run[3])
                for link in links:
                    if link["ifname"] == "fr-c":
                        link["addr_info"][1]["local"] = local
                        if nodad:
                            link["addr_info"][1]["nodad"] = True
                run[3] = json.dumps(links)
        return checked4(doc)

    assert with_address("fe80::3ca4:11ff:fe2b:32", False)["ok"]  # the control: as recorded
    assert with_address("fe80::1:11ff:fe2b:32", False)["ok"]
    assert not with_address("fe80::1:11ff:fe2b:32", True)["ok"]  # (added as a gateway is)
