"""The stateful property test's rules and invariants, whatever the host: random sequences of
up, down, gc, check, restore and teardown over two state files, both backends and NAT, clone
and bridge modes (each state file with a bridge of its own), NAT nft VMs and clones with IPv6
(``--ipv6``, ``nft6`` and ``clone6``: each state file's blocks from its own ULA pool; ``nft6p``
with an IPv6 egress policy) among them, with drift injected behind
fireroute's back and processes killed mid-run, run through the CLI. :class:`Machine` leaves
the host to a subclass: tests/reliability/test_property.py runs it against the kernel in
throwaway namespaces (and sends packets), tests/unit/test_property_fake.py against the fake
kernel (kernel/fake.py), without root and with many more examples.

After every step:

- ``check`` of a state file is clean exactly when nothing of it was damaged since its last
  ``restore`` (and a damage is always seen);
- foreign objects (another program's link, nft table and iptables rule) are unchanged;
- no two VMs, of any state file, share an address block, a MAC (clones aside: they share
  their guest's by design) or a tap;
- every VM that is up holds its tap, and the kernel holds no fireroute link no lease accounts
  for once ``gc`` ran;
- IPv6 follows the VMs with it, across state files: the ``ip6`` table is there exactly while
  one is up; IPv6 forwarding is on while one is up, and as it was before once none is (but
  while another state file's bridge guest or clone is up: its tap or veth has IPv6 on, and
  its VM may have IPv6, so the last v6 VM's down leaves it, kernel/scope.py
  ``_last_forwarding6``; found by the long run, a clone of A and B's v6 VM torn down); a v6
  VM's tap holds its gateway (as ``show`` says it) and its route, a v4-only NAT VM's tap no IPv6
  address and no IPv6 route.

``--ipv6`` where it is not available (another backend or mode) is refused in one line and
changes nothing; the same up without it (the control) works.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fireroute.want import nft

FILES = ("A", "B")
POOLS = {"A": ("172.16.0.0/16", "10.200.0.0/16"), "B": ("172.17.0.0/16", "10.201.0.0/16")}
BRIDGES = {  # each state file its own bridge, made by its first bridge VM
    "A": [
        "--bridge",
        "bra",
        "--bridge-address",
        "192.168.50.1/24",
        "--range",
        "192.168.50.10-192.168.50.99",
    ],
    "B": [
        "--bridge",
        "brb",
        "--bridge-address",
        "192.168.51.1/24",
        "--range",
        "192.168.51.10-192.168.51.99",
    ],
}
NAMES = ("1", "2", "3")  # VM "a1" of A, "b1" of B: distinct taps (fr-a1, fr-b1)
SHARED_DAMAGE = frozenset({"flush-table", "flush-chain"})
SHAPES = {
    "nft": [],
    "iptables": ["--backend", "iptables"],
    "clone": ["--mode", "clone"],
    "bridge": ["--mode", "bridge", "--masquerade"],
    "nft6": ["--ipv6"],  # (a NAT nft VM with IPv6)
    # with an IPv6 egress policy: the ip6 table's lazy policy parts come with it
    "nft6p": ["--ipv6", "--deny-out", "2000::/16", "--allow-out", "2000:1::/32"],
    "clone6": ["--mode", "clone", "--ipv6"],  # (a clone with IPv6)
}
V6_SHAPES = ("nft6", "nft6p", "clone6")
V6_REFUSED = {  # (shape the VM is of, what is added to --ipv6): each refused
    "iptables": ("iptables", []),
}


def run_settings(examples: int, steps: int, seeded: bool) -> settings:
    """Examples of up to ``steps`` steps; the same ones every run unless the examples were
    asked for (``seeded`` False: a count chosen by hand draws new ones)."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=seeded,
    )


class Machine(RuleBasedStateMachine):
    """The rules and invariants. A subclass gives the host: :meth:`fireroute` (the CLI),
    :meth:`links`, :meth:`foreign_state`, the drift (:meth:`drop_tap`, :meth:`flush`,
    :meth:`drop_masq`, :meth:`add_element`), :meth:`table_exists`, :meth:`set_held`,
    :meth:`chains_intact`, :meth:`probe`, the IPv6 side (:meth:`table6_exists`,
    :meth:`forwarding6`, :meth:`ipv6_of`); ``self.foreign`` is set by it once the foreign
    objects are in place, ``self.forwarding6_before`` once it read IPv6 forwarding."""

    def __init__(self) -> None:
        super().__init__()
        self.up: dict[str, dict[str, str]] = {f: {} for f in FILES}
        """state file -> {vm: shape} that the model says are up"""
        self.damaged: dict[str, set[tuple[str, str | None]]] = {f: set() for f in FILES}
        """state file -> the damage done to it since its last restore: (kind, the VM hit, or
        None for a shared object)"""
        self.foreign: tuple = ()
        self.forwarding6_before = "0"

    # -- the host (a subclass's) ---------------------------------------------------------------
    def fireroute(self, sf: str, args: tuple[str, ...], fault: str):  # noqa: ANN201
        """``fireroute ARGS`` on state file ``sf`` (FIREROUTE_FAULT ``fault`` when given): a
        result with ``returncode``, ``stdout`` and ``stderr``."""
        raise NotImplementedError

    def links(self) -> set[str]:
        """The names of the host namespace's links."""
        raise NotImplementedError

    def foreign_state(self) -> tuple:
        """Another program's link, table and rules as they are now."""
        raise NotImplementedError

    def drop_tap(self, dev: str) -> None:
        raise NotImplementedError

    def flush(self, what: str) -> None:
        """``flush-table`` (the NAT table) or ``flush-chain`` (its forward chain)."""
        raise NotImplementedError

    def drop_masq(self, src: str, uplink: str) -> None:
        """The NAT table's masq element ``src . "uplink"`` deleted (gone already: nothing)."""
        raise NotImplementedError

    def add_element(self, set_name: str, value: str, tag: str) -> None:
        raise NotImplementedError

    def table_exists(self) -> bool:
        raise NotImplementedError

    def set_held(self, set_name: str) -> bool:
        """Does the NAT table hold this set?"""
        raise NotImplementedError

    def chains_intact(self) -> bool:
        """The NAT table's chains and rules are exactly the ones up declares (for the parts it
        holds: want/tables.py PARTS)."""
        raise NotImplementedError

    def probe(self, sf: str, name: str) -> None:
        """A NAT guest that is up and undamaged, tried: its tap is taken for something else
        and given back by ``restore``, after which ``check`` is clean."""
        raise NotImplementedError

    def table6_exists(self) -> bool:
        """Is the ``ip6`` NAT table there?"""
        raise NotImplementedError

    def forwarding6(self) -> str:
        """net.ipv6.conf.all.forwarding as it is."""
        raise NotImplementedError

    def ipv6_of(self, dev: str) -> tuple[set[str], set[str]]:
        """The IPv6 addresses (CIDR) and route destinations on link ``dev`` (the kernel's
        own ``fe80::/64`` route left out)."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def fr(self, sf: str, *args: str, env: dict[str, str] | None = None):  # noqa: ANN201
        return self.fireroute(sf, args, (env or {}).get("FIREROUTE_FAULT", ""))

    def ls(self, sf: str) -> list[dict]:
        p = self.fr(sf, "ls", "--json")
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []

    def everyone(self) -> dict[str, list[dict]]:
        return {sf: self.ls(sf) for sf in FILES}

    def args(self, sf: str, name: str, shape: str) -> list[str]:
        if shape == "bridge":
            return ["up", name, *SHAPES[shape], *BRIDGES[sf]]
        pool = POOLS[sf][1 if shape in ("clone", "clone6") else 0]
        return ["up", name, "--pool", pool, *SHAPES[shape]]

    # -- rules -----------------------------------------------------------------------------
    @rule(
        sf=st.sampled_from(FILES),
        n=st.sampled_from(NAMES),
        shape=st.sampled_from(list(SHAPES)),
        probe=st.sampled_from([True, False]),  # (True first: the simplest draw probes)
    )
    def up_vm(self, sf: str, n: str, shape: str, probe: bool) -> None:
        name = sf.lower() + n
        have = self.up[sf].get(name)
        p = self.fr(sf, *self.args(sf, name, shape))
        if have is None or have == shape:
            assert p.returncode == 0, p.stderr
            self.up[sf][name] = shape
            if probe and (sf, name) in self.nat_guests():  # up, and then packets flow
                self.probe(sf, name)
        else:  # the same name with other options: refused, nothing changed
            assert p.returncode == 3, p.stderr

    @rule(sf=st.sampled_from(FILES), n=st.sampled_from(NAMES), twice=st.booleans())
    def down_vm(self, sf: str, n: str, twice: bool) -> None:
        name = sf.lower() + n
        p = self.fr(sf, "down", name, *([name] if twice else []))
        assert p.returncode == 0, p.stderr
        self.up[sf].pop(name, None)
        # a damaged VM's damage goes with it (found by the long run: a bridge VM's deleted
        # element, then that VM down, and check rightly clean)
        self.damaged[sf] = {d for d in self.damaged[sf] if d[1] != name}
        if not self.up[sf]:
            self.damaged[sf] = set()  # nothing left that could be damaged

    @rule(
        sf=st.sampled_from(FILES),
        n=st.sampled_from(NAMES),
        k=st.integers(1, 4),
        shape=st.sampled_from(["nft", "nft6"]),
    )
    def killed_up_then_gc(self, sf: str, n: str, k: int, shape: str) -> None:
        name = sf.lower() + n
        if name in self.up[sf]:
            return
        p = self.fr(sf, *self.args(sf, name, shape), env={"FIREROUTE_FAULT": f"kill@{k}"})
        assert p.returncode in (0, -9, 137), p.stderr
        q = self.fr(sf, "gc")
        assert q.returncode == 0, q.stderr
        names = {v["name"] for v in self.ls(sf)}
        if p.returncode == 0:
            assert name in names  # it was not killed: gc must leave it up
            self.up[sf][name] = shape
        else:
            assert name not in names  # killed half-way: gc undid it

    @rule(
        sf=st.sampled_from(FILES), n=st.sampled_from(NAMES), bad=st.sampled_from(list(V6_REFUSED))
    )
    def ipv6_refused(self, sf: str, n: str, bad: str) -> None:
        """``--ipv6`` where it is not available: one line, exit 2, nothing changed; the same up
        without it (the control, for a VM not up) works, and goes down again."""
        name = sf.lower() + n
        shape, extra = V6_REFUSED[bad]
        before, links = self.everyone(), self.links()
        p = self.fr(sf, *self.args(sf, name, shape), *extra, "--ipv6")
        assert p.returncode == 2 and "--ipv6" in p.stderr, (p.returncode, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert self.everyone() == before and self.links() == links
        if name in self.up[sf]:
            return
        q = self.fr(sf, *self.args(sf, name, shape), *extra)
        assert q.returncode == 0, q.stderr
        q = self.fr(sf, "down", name)
        assert q.returncode == 0, q.stderr

    @rule(sf=st.sampled_from(FILES))
    def gc(self, sf: str) -> None:
        p = self.fr(sf, "gc")
        assert p.returncode == 0, p.stderr

    @rule(sf=st.sampled_from(FILES))
    def restore(self, sf: str) -> None:
        p = self.fr(sf, "restore")
        assert p.returncode == 0, p.stderr
        self.damaged[sf] = set()

    @rule(sf=st.sampled_from(FILES))
    def teardown_file(self, sf: str) -> None:
        p = self.fr(sf, "teardown")
        assert p.returncode == 0, p.stderr
        self.up[sf] = {}
        self.damaged[sf] = set()

    @precondition(lambda self: any(self.up.values()))
    @rule(data=st.data(), kind=st.sampled_from(["tap", "flush-table", "flush-chain", "element"]))
    def drift(self, data: st.DataObject, kind: str) -> None:
        sf = data.draw(st.sampled_from([f for f in FILES if self.up[f]]))
        links = self.links()
        vms = [v for v in self.ls(sf) if v["name"] in self.up[sf] and v["host_dev"] in links]
        if not vms:
            return
        vm = data.draw(st.sampled_from(vms))
        nft = vm["backend"] == "nft" and self.table_exists()
        if kind == "tap" or not nft:
            self.drop_tap(vm["host_dev"])
            kind = "tap"
        elif kind in SHARED_DAMAGE:
            self.flush(kind)
        else:
            src = vm["veth"]["netns_ip"] if vm["mode"] == "clone" else vm["guest_ip"]
            # deleted before (a second drift of the same kind) is damage all the same
            self.drop_masq(src, vm["uplink"])
        hit = [sf]  # a shared chain flushed damages every state file with VMs in the table
        if kind in SHARED_DAMAGE:
            hit = [f for f in FILES if any(v["backend"] == "nft" for v in self.ls(f))]
        for f in hit:
            self.damaged[f].add((kind, None if kind in SHARED_DAMAGE else vm["name"]))
            p = self.fr(f, "check")
            assert p.returncode == 1, (f, kind, p.stdout)

    @precondition(lambda self: any(self.up.values()))
    @rule(data=st.data(), own_tag=st.booleans())
    def extra_element(self, data: st.DataObject, own_tag: bool) -> None:
        """An element no lease asks for, keyed on a VM (an allow of everything in its policy
        pair, or its host port 22 where the table holds no pair for it; a bridge guest's host
        port 22), with the VM's own tag or a state file's that is
        neither: its file's check names the VM, the other file's check is as it was, and
        restore removes it."""
        sf = data.draw(st.sampled_from([f for f in FILES if self.up[f]]))
        vms = [v for v in self.ls(sf) if v["name"] in self.up[sf] and v["backend"] == "nft"]
        if not vms or not self.table_exists():
            return
        vm = data.draw(st.sampled_from(vms))
        tag = vm["owner_tag"] if own_tag else "0badc0de:x"
        if vm["mode"] == "bridge":
            what = ("bridged_ports", f'{vm["guest_ip"]} . "tcp" . 22')
        else:  # its policy pair, if the table holds it (it comes with the first VM needing
            # it: want/tables.py PARTS); else its host ports
            dev = vm["host_dev"]
            pair = f"out_allow_{nft.shard(dev)}"
            what = (
                (pair, f'"{dev}" . 0.0.0.0/0')
                if self.set_held(pair)
                else ("host_ports", f'"{dev}" . "tcp" . 22')
            )
        other = next(f for f in FILES if f != sf)
        before = self.fr(other, "check").returncode
        self.add_element(*what, tag)
        p = self.fr(sf, "check")
        said = [line for line in p.stdout.splitlines() if "0.0.0.0/0" in line or '" . 22' in line]
        assert p.returncode == 1 and said and all(vm["name"] in line for line in said), p.stdout
        assert self.fr(other, "check").returncode == before
        assert self.fr(sf, "restore").returncode == 0
        self.damaged[sf] = set()

    def nat_guests(self) -> list[tuple[str, str]]:
        """(state file, vm) of NAT guests that are up in state files with no damage."""
        return [
            (sf, name)
            for sf in FILES
            if not self.damaged[sf]
            for name, shape in self.up[sf].items()
            if shape in ("nft", "iptables", "nft6")
        ]

    @precondition(lambda self: self.nat_guests())
    @rule(data=st.data())
    def packets(self, data: st.DataObject) -> None:
        self.probe(*data.draw(st.sampled_from(self.nat_guests())))

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def check_tells_the_truth(self) -> None:
        for sf in FILES:
            p = self.fr(sf, "check", "--json")
            damage = {kind for kind, _vm in self.damaged[sf]}
            if damage and damage <= SHARED_DAMAGE and p.returncode == 0:
                # another up re-declared the shared table's chains (its first VM there): then
                # the kernel must really hold them again; or the damaged table went with the
                # last nft VM (found by the long run: A's last nft VM down, its iptables VM
                # left, no table to be damaged any more)
                nft_vms = any(v["backend"] == "nft" for v in self.ls(sf))
                gone = not self.table_exists() and not nft_vms
                assert gone or self.chains_intact(), p.stdout
                self.damaged[sf] = set()
            elif damage:
                assert p.returncode == 1, (sf, damage, p.stdout)
            else:
                assert p.returncode == 0, (sf, p.stdout, p.stderr)

    @invariant()
    def foreign_objects_untouched(self) -> None:
        assert self.foreign_state() == self.foreign

    @invariant()
    def model_matches_and_nothing_is_shared(self) -> None:
        everyone = []
        for sf in FILES:
            vms = self.ls(sf)
            assert {v["name"] for v in vms} == set(self.up[sf]), (sf, vms, self.up[sf])
            everyone += vms
        for key in ("host_dev", "mac"):  # clones share their guest's address and MAC by design
            values = [v[key] for v in everyone if key == "host_dev" or v["mode"] != "clone"]
            assert len(values) == len(set(values)), (key, values)
        blocks = [
            v["veth"]["host_ip"] if v["mode"] == "clone" else v["guest_ip"] for v in everyone
        ]  # a NAT VM's guest address stands for its block; a bridge guest's is its lease
        assert len(blocks) == len(set(blocks)), blocks
        links = self.links()
        for v in everyone:
            if not self.damaged["A" if v["name"].startswith("a") else "B"]:
                assert v["host_dev"] in links, v["name"]

    @invariant()
    def ipv6_follows_the_vms_with_it(self) -> None:
        v6 = {f for f in FILES if set(V6_SHAPES) & set(self.up[f].values())}
        assert self.table6_exists() == bool(v6), self.up
        forwarding6 = self.forwarding6()
        if v6:  # (but a v6 VM's tap deleted: another state file's gc sets it back, as
            # IPv4's, no tap with IPv6 on being left; its own restore switches it on again)
            assert forwarding6 == "1" or any(self.damaged[f] for f in v6), self.up
        else:  # (a bridge port's or a clone veth's IPv6 keeps it on for no VM's sake)
            assert forwarding6 == self.forwarding6_before, self.up
        links = self.links()
        for sf, vms in self.everyone().items():
            for v in vms:
                if v["mode"] != "nat" or v["host_dev"] not in links or self.damaged[sf]:
                    continue
                addrs, routes = self.ipv6_of(v["host_dev"])
                if v.get("ipv6"):
                    gateway = f"{v['ipv6']['gateway']}/64"  # its own (fe80::1:…)
                    assert gateway in addrs and v["ipv6"]["block"] in routes, (v, addrs, routes)
                else:
                    assert not addrs and not routes, (v["name"], addrs, routes)
