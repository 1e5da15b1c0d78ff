"""What no lease asks for is drift: an element added to any set or map of fireroute's tables
(keyed on a VM's tap or address, or on nobody's), a rule added to any of its chains, a set
added to its table, an iptables rule carrying this state file's tag. ``check`` reports each
(naming the VM whose key it carries, or no vm) and exits 1; ``restore`` removes it (its dry
run printed exactly that), after which ``check`` is clean and the sets hold what they held.
The sets, maps and chains are enumerated from the plan, so a new one is covered as it lands.
Another state file's own elements and foreign tables are left alone (the controls)."""

from __future__ import annotations

import json
import re

import pytest

from fireroute.want import nft, tables
from fireroute.want.nft import FILTER_SETS
from tests.conftest import Host
from tests.kernel.test_repair import MODE_ARGS

pytestmark = pytest.mark.privileged

T = "ip firecracker"
NOBODY = '"fr-zz"'  # a tap no VM has


def report(host: Host, *names: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    p = host.fireroute("check", "--json", *names, check=False, env=env)
    return p.returncode, json.loads(p.stdout)


def field(kind: str, n: int, has_ifname: bool, tap: str, ip: str, interval: bool) -> str:
    """The ``n``th field of a made-up element of type ``kind``: the first ifname is the
    VM's tap, an address is the VM's own where nothing else keys the element."""
    return {
        "ifname": tap if n == 0 else '"up9"',
        "ipv4_addr": ("0.0.0.0/0" if interval else "10.9.9.9") if has_ifname else ip,
        "inet_proto": '"tcp"',
        "inet_service": "2222",
        "verdict": "jump out_0",
        "ether_addr": "06:00:00:00:00:09",
        "ipv6_addr": "2001:db8:9::",  # (a /64's first address: what a v6 guest's key holds)
        "integer": "0x20010db800090000",  # (a typeof key's 64-bit raw field: a /64 as a number)
    }[kind]


def made_up(kind: str, tap: str, ip: str) -> str:
    """An element of a set or map of type ``kind`` (as SETS/MAPS give it) no lease asks for."""
    types, _, flags = kind.partition(";")
    if types.startswith("typeof "):  # (the fields' datatypes: the bridge table's targets6)
        types = types.removeprefix("typeof ").replace("iifname", "ifname")
        types = types.replace("@th,64,64", "integer")
    key, _, data = types.partition(" : ")

    def part(text: str) -> str:
        kinds = [k.strip() for k in text.split(" . ")]
        has_ifname = "ifname" in kinds
        seen: dict[str, int] = {}
        out = []
        for k in kinds:
            out.append(field(k, seen.get(k, 0), has_ifname, tap, ip, "interval" in flags))
            seen[k] = seen.get(k, 0) + 1
        return " . ".join(out)

    return part(key) + (f" : {part(data)}" if data else "")


def sample(names: list[str], keep: str) -> list[str]:
    """One or two of each family of numbered sets (``out_deny_0`` ... ``out_deny_63``): ``keep``'s
    number and the first other; every set that is not numbered."""
    picked, seen = [], {}
    for name in names:
        stem = re.sub(r"_\d+$", "", name)
        if stem == name or name.endswith(f"_{keep}") or seen.get(stem, 0) < 1:
            picked.append(name)
            if stem != name and not name.endswith(f"_{keep}"):
                seen[stem] = seen.get(stem, 0) + 1
    return picked


KINDS = {**nft.SETS, **nft.MAPS}
K = str(nft.shard("fr-a"))


def setup(host: Host, family: str) -> tuple[str, str, dict]:
    """VM ``a`` (or ``b``, a bridge guest): its tap and guest address; check is clean."""
    if family == "ip":  # a table holding every part (want/tables.py PARTS): every set is there
        host.sh(f"nft -f - <<'EOF'\n{tables.skeleton('firecracker')}EOF\n")
        host.fireroute("up", "a")
        host.fireroute("up", "other", "--allow-peers", "--allow-metadata", "--egress", "none")
    else:
        host.fireroute("up", "b", *MODE_ARGS["bridge"])
    vm = json.loads(host.fireroute("ls", "--json").stdout)[0]
    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean  # the positive control: an untouched host
    return f'"{vm["tap"] if family == "ip" else "fr-b"}"', vm["guest_ip"].split("/")[0], clean


def elements(host: Host) -> dict[tuple[str, str, str], list]:
    return {
        (s["family"], s["table"], s["name"]): s.get("elem", [])
        for item in host.nft()
        if (s := item.get("set") or item.get("map"))
    }


def heals(host: Host, clean: dict, before: dict) -> None:
    """restore's dry run is what it runs; then check is clean again and every set holds
    what it held; a second restore has nothing to do."""
    planned = host.fireroute("restore", "--dry-run").stdout
    ran = json.loads(host.fireroute("restore", "--json").stdout)["commands"]
    assert ran == planned
    rc, healed = report(host)
    assert rc == 0 and healed == clean, healed
    assert elements(host) == before
    assert host.fireroute("restore").stdout.strip() == "restore: nothing to do"


def add(host: Host, family: str, table: str, name: str, value: str, comment: str = "") -> None:
    key, colon, data = value.partition(" : ")
    text = f"{key} {comment} : {data}" if colon and comment else f"{value} {comment}".strip()
    host.sh(f"nft -f - <<'EOF'\nadd element {family} {table} {name} {{ {text} }}\nEOF\n")


def cases():
    for name in sample(list(KINDS), K):
        yield pytest.param("ip", name, id=f"ip {name}")
    for name in FILTER_SETS:
        yield pytest.param("bridge", name, id=f"bridge {name}")


@pytest.mark.parametrize(("family", "name"), list(cases()))
def test_an_element_no_lease_asks_for_is_reported_and_removed(host: Host, family: str, name: str):
    tap, ip, clean = setup(host, family)
    kinds = KINDS if family == "ip" else FILTER_SETS
    before = elements(host)
    value, vm = made_up(kinds[name], tap, ip), ("a" if family == "ip" else "b")
    have = json.dumps(before[(family, "firecracker", name)])
    if tap.strip('"') in have and tap in value and "." not in value:  # its own: nobody's then
        value, vm = value.replace(tap, NOBODY), None
    add(host, family, "firecracker", name, value)
    rc, found = report(host)
    assert rc == 1 and not found["ok"], found
    said = [p for p in (found["vms"][vm] if vm else sum(found["shared"].values(), [])) if
            f"/{name} has" in p]  # fmt: skip
    assert len(said) == 1 and ("(no vm)" in said[0]) == (vm is None), found
    heals(host, clean, before)


def test_every_set_at_once(host: Host):
    """One element in every set and map of the NAT table at once, in one transaction: each
    is reported, under the VM whose tap or address it carries."""
    tap, ip, clean = setup(host, "ip")
    before = elements(host)
    script = "".join(
        f"add element {T} {name} {{ {made_up(kind, tap, ip).replace(tap, NOBODY)} }}\n"
        if name in ("taps", "acct_tx", "acct_rx")  # a has its own: nobody's there
        else f"add element {T} {name} {{ {made_up(kind, tap, ip)} }}\n"
        for name, kind in KINDS.items()
    )
    host.sh(f"nft -f - <<'EOF'\n{script}EOF\n")
    rc, found = report(host)
    assert rc == 1
    said = "\n".join(found["vms"]["a"] + sum(found["shared"].values(), []))
    for name in KINDS:
        assert f"/{name} has" in said, name
    assert not found["vms"]["other"], found  # none carries the other VM's key
    heals(host, clean, before)


@pytest.mark.parametrize("whose", ["other state file's tag", "a legacy tag", "this vm's tag"])
def test_an_element_keyed_on_a_vm_is_its_whatever_the_comment(host: Host, whose: str):
    """An allow of everything in a's own policy set, with any comment: a's drift."""
    tap, ip, clean = setup(host, "ip")
    before = elements(host)
    mine = json.loads(host.fireroute("ls", "--json").stdout)[0]["owner_tag"]
    comment = {
        "other state file's tag": 'comment "0badc0de:x"',
        "a legacy tag": 'comment "fireroute:a"',
        "this vm's tag": f'comment "{mine}"',
    }[whose]
    add(host, "ip", "firecracker", f"out_allow_{K}", f"{tap} . 0.0.0.0/0", comment)
    rc, found = report(host, "a")  # a named VM: its drift is said under it
    assert rc == 1 and any(f"/out_allow_{K} has" in p for p in found["vms"]["a"]), found
    assert report(host)[0] == 1
    heals(host, clean, before)


@pytest.mark.parametrize(
    ("name", "value", "vm"),
    [
        (f"out_allow_{K}", '"fr-*" . 0.0.0.0/0', None),  # a wildcard: every tap of the pair
        (f"out_allow_{K}", '"fr-a" . 10.0.0.1-10.0.0.5', "a"),  # a range, not a prefix
        ("out_jump", '"fr-a" : accept', "a"),  # a plain verdict
    ],
    ids=["wildcard tap", "address range", "verdict accept"],
)
def test_elements_of_every_shape_are_read_back_and_removed(
    host: Host, name: str, value: str, vm: str | None
):
    _, _, clean = setup(host, "ip")
    before = elements(host)
    add(host, "ip", "firecracker", name, value)
    rc, found = report(host)
    said = found["vms"][vm] if vm else found["shared"]["nftables table ip firecracker"]
    assert rc == 1 and any(f"/{name} has {value}," in p for p in said), found
    heals(host, clean, before)


def test_a_rule_in_every_chain_and_a_set_of_nobody(host: Host):
    """A rule added to each of fireroute's chains (as the plan lists them), and a set and a
    map added to its table: each reported, and removed by restore."""
    _, _, clean = setup(host, "ip")
    before = elements(host)
    chains = list(tables.chains())
    script = "".join(f"add rule {T} {c} meta mark 0x2a counter\n" for c in chains)
    script += (
        f"add set {T} evil {{ type ifname; }}\nadd map {T} evil_map {{ type ifname : verdict; }}\n"
    )
    host.sh(f"nft -f - <<'EOF'\n{script}EOF\n")
    rc, found = report(host)
    said = "\n".join(found["shared"]["nftables table ip firecracker"])
    assert rc == 1
    for c in chains:
        assert (
            f'chain {c} of ip firecracker: has foreign rule "meta mark 0x0000002a counter"' in said
        )
    assert "set evil of ip firecracker is not fireroute's" in said
    assert "set evil_map of ip firecracker is not fireroute's" in said
    heals(host, clean, before)
    assert "evil" not in host.nft_text() and "0x0000002a" not in host.nft_text()


def other(host: Host, *args: str, check: bool = True):
    env = {"FIREROUTE_STATE": str(host.state.parent / "b" / "state.db")}
    return host.fireroute(*args, check=check, env=env)


def test_another_state_files_elements_are_its_own_and_foreign_tables_are_untouched(host: Host):
    """B's VM in the same table, with every allowance: A's check is clean, A's restore has
    nothing to do. A foreign table with A's tap in it is not A's. Then an element keyed on
    B's tap without B's tag is drift for both (no vm for A, b1 for B); A's restore removes
    it and B's elements stay."""
    _, a_ip, clean = setup(host, "ip")
    other(host, "up", "b1", "--tap", "fr-b1", "--pool", "172.17.0.0/16", "--allow-peers",
          "--allow-metadata", "--allow-host-port", "22/tcp", "--egress", "public",
          "--publish", "8080:80")  # fmt: skip
    # a policy of B's whose destination is A's guest address: B's element, not A's drift
    other(host, "up", "b2", "--tap", "fr-b2", "--pool", "172.17.0.0/16", "--deny-out",
          f"{a_ip}/32")  # fmt: skip
    host.sh(
        "nft 'add table ip foreign; add set ip foreign taps { type ifname; }; "
        'add element ip foreign taps { "fr-a" }\''
    )
    foreign = host.run("nft", "list", "table", "ip", "foreign").stdout
    assert report(host) == (0, clean)
    assert host.fireroute("restore").stdout.strip() == "restore: nothing to do"
    b_env = {"FIREROUTE_STATE": str(host.state.parent / "b" / "state.db")}
    assert report(host, env=b_env)[0] == 0

    before = elements(host)
    add(host, "ip", "firecracker", "vms", '"fr-b1" . 10.9.9.9')
    add(host, "ip", "firecracker", f"out_allow_{nft.shard('fr-b1')}", '"fr-b1" . 0.0.0.0/0')
    rc, found = report(host)
    assert rc == 1 and any("(no vm)" in p for p in found["shared"]["nftables table ip firecracker"])
    rc_b, found_b = report(host, env=b_env)
    assert rc_b == 1 and any(
        f"/out_allow_{nft.shard('fr-b1')} has" in p for p in found_b["vms"]["b1"]
    )
    heals(host, clean, before)
    assert report(host, env=b_env)[0] == 0  # B's own elements stayed
    assert host.run("nft", "list", "table", "ip", "foreign").stdout == foreign


def test_an_iptables_rule_with_this_state_files_tag_is_reported_and_removed(host: Host):
    host.fireroute("up", "a", "--backend", "iptables")
    rc, clean = report(host)
    assert rc == 0
    tag = "fireroute:" + json.loads(host.fireroute("ls", "--json").stdout)[0]["owner_tag"]
    foreign = "-I FORWARD -i fr-a -p tcp --dport 23 -j ACCEPT"  # no tag: not fireroute's
    host.sh(f"iptables-nft {foreign}")
    assert report(host) == (0, clean)  # the control: an untagged rule is not ours
    host.sh(f"iptables-nft -I FORWARD -i fr-a -m comment --comment {tag} -j ACCEPT")
    host.sh(f"iptables-nft -t nat -I POSTROUTING -o up0 -m comment --comment {tag} -j MASQUERADE")
    rc, found = report(host)
    said = [o for o in found["orphans"] if tag in o]
    assert rc == 1 and len(said) == 2 and all('vm "a"' in o for o in said), found
    rc, named = report(host, "a")
    assert rc == 1 and len([p for p in named["vms"]["a"] if "no lease asks for" in p]) == 2
    planned = host.fireroute("restore", "--dry-run").stdout
    assert planned.count(f"-m comment --comment {tag} -j") == 2, planned  # (as fireroute writes it)
    host.fireroute("restore")
    assert report(host) == (0, clean)
    assert any("--dport 23" in r for r in host.iptables_rules())  # the foreign rule stays
