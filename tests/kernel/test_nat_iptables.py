"""The iptables-nft backend in a throwaway namespace."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def test_iptables_rules_tagged_and_removed(host: Host):
    host.run("iptables-nft", "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT")  # foreign rule
    foreign = host.iptables_rules()
    a = json.loads(host.fireroute("up", "a", "--backend", "iptables", "--json").stdout)[0]
    host.fireroute("up", "b", "--backend", "iptables")
    state_id = a["owner_tag"].split(":")[0]
    assert a["owner_tag"] == f"{state_id}:a" and len(state_id) == 8
    rules = host.iptables_rules()
    assert (
        f'-A POSTROUTING -s 172.16.0.2/32 -o up0 -m comment --comment "fireroute:{state_id}:a" '
        "-j MASQUERADE" in rules
    )
    assert (
        "-A FORWARD -s 172.16.0.6/32 -i fr-b -o up0 -m conntrack ! --ctstate INVALID,UNTRACKED "
        f'-m comment --comment "fireroute:{state_id}:b" -j ACCEPT' in rules
    )
    assert (  # (raw: its source, before conntrack)
        f'-A PREROUTING ! -s 172.16.0.2/32 -i fr-a -m comment --comment "fireroute:{state_id}:a" '
        "-j DROP" in rules
    )
    conntrack = [r for r in rules if "ESTABLISHED" in r and r.startswith("-A FORWARD")]
    assert len(conntrack) == 1 and "fireroute:shared" in conntrack[0]
    assert a["backend"] == "iptables" and host.forwarding() == "1"

    host.fireroute("down", "a")
    rules = host.iptables_rules()
    assert not [r for r in rules if f"fireroute:{state_id}:a" in r]
    assert [r for r in rules if "fireroute:shared" in r]  # b still runs
    host.fireroute("down", "b")
    assert host.iptables_rules() == foreign  # only the foreign rule is left
    assert host.forwarding() == "0"
    assert "fr-a" not in host.links() and "fr-b" not in host.links()


def test_mixed_backends_teardown(host: Host):
    host.fireroute("up", "n1")
    host.fireroute("up", "i1", "--backend", "iptables")
    host.fireroute("teardown")
    assert not [r for r in host.iptables_rules() if "fireroute" in r]
    assert "firecracker" not in host.nft_text()
    assert not [n for n in host.links() if n.startswith("fr-")]
    assert host.forwarding() == "0"


def test_iptables_chains_fireroute_brought_in_go_with_its_last_rule(host: Host):
    """iptables-nft makes its tables and base chains on first use; the ones fireroute's rules
    brought into being go again with its last VM, the ones that were there stay."""
    assert host.nft_text() == ""  # a host with no ruleset at all
    host.fireroute("up", "a", "--backend", "iptables")
    assert "table ip nat" in host.nft_text() and "chain INPUT" in host.nft_text()
    assert "table ip raw" in host.nft_text()
    host.fireroute("down", "a")
    assert host.nft_text() == ""  # exactly as before

    host.run("iptables-nft", "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT")  # theirs
    before = host.nft_text()
    host.fireroute("up", "a", "--backend", "iptables")
    host.fireroute("up", "b", "--backend", "iptables")
    host.fireroute("down", "a")
    assert "chain INPUT" in host.nft_text()  # b still uses it
    host.fireroute("teardown")
    assert host.nft_text() == before  # their table and chain stay, ours are gone


def before_raw(host: Host) -> str:
    """VM "a" up on the iptables backend of a host with no ruleset, then made to look as an
    earlier fireroute left it, before it used the raw table: no raw rule nor table, and the
    record of what its rules brought in without raw (returned, as the state file holds it)."""
    import sqlite3

    assert host.nft_text() == ""
    host.fireroute("up", "a", "--backend", "iptables")
    for rule in [r for r in host.iptables_rules() if r.startswith("-A PREROUTING")]:
        host.run("sh", "-c", f"iptables-nft -t raw {rule.replace('-A', '-D', 1)}")
    host.run("nft", "delete", "table", "ip", "raw")
    db = sqlite3.connect(host.state)
    (made,) = db.execute("SELECT value FROM meta WHERE key = 'ipt_made'").fetchone()
    older = json.dumps([m for m in json.loads(made) if not m.startswith("raw")])
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'ipt_made'", (older,))
    db.close()
    return older


@pytest.mark.parametrize("path", ["up", "restore"])
def test_a_chain_an_earlier_version_did_not_use_is_recorded_and_goes_too(host: Host, path: str):
    """A host whose iptables VMs were made before fireroute used the raw table: their record
    of what fireroute's rules brought in has no raw, and no raw rule is there. The next
    ``up`` (or a ``restore`` writing the missing rule back) brings raw in and records it, so
    the last ``down`` leaves the ruleset as it was before the first VM."""
    before_raw(host)
    if path == "up":
        host.fireroute("up", "b", "--backend", "iptables")
    assert host.fireroute("check", check=False).returncode == 1  # a's raw rule is missing
    host.fireroute("restore")
    assert host.fireroute("check").returncode == 0 and "table ip raw" in host.nft_text()
    host.fireroute("teardown")
    assert host.nft_text() == ""  # raw, made after the first VM, went with the last rule


@pytest.mark.parametrize(
    ("setup", "sure"),
    [
        ([], True),  # no ruleset: every table missing
        ([["nft", "add", "table", "ip", "filter"]], False),  # a table with no chain
        ([["iptables-nft", "-A", "INPUT", "-j", "ACCEPT"]], False),  # FORWARD printed, not there
        ([["iptables-nft", "-P", "FORWARD", "DROP"]], False),  # INPUT printed, not there
        ([["iptables-nft", "-t", "raw", "-N", "mine"]], False),  # PREROUTING printed, not there
        (
            [
                ["iptables-nft", "-A", "INPUT", "-j", "ACCEPT"],
                ["iptables-nft", "-P", "FORWARD", "DROP"],
                ["iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"],
                ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-j", "ACCEPT"],
            ],
            True,  # every chain used shows a rule or a policy that only a real chain has
        ),
        ([["fireroute", "up", "a"]], True),  # its rules in every chain, the rest recorded
        ([["fireroute", "up", "a"], ["iptables-nft", "-t", "nat", "-F"]], True),  # recorded
        (
            [
                ["iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"],  # theirs
                ["fireroute", "up", "a"],
                ["iptables-nft", "-t", "nat", "-F"],
            ],
            False,  # nat/POSTROUTING was there before (not recorded) and shows no rule now
        ),
    ],
)
def test_what_up_reads_off_iptables_save_is_what_nft_lists(
    host: Host, setup: list[list[str]], sure: bool
):
    """``up`` reads which tables and chains its rules would bring in off the iptables-nft-save
    it reads anyway, and asks nft only when that cannot tell: whatever it reads off the save
    records what nft's listing records, on each ruleset the kernel really holds. (``sure``:
    the save tells, no nft asked: a second VM's up on a host of fireroute's VMs, say.)"""
    from fireroute.kernel import observe, scope
    from fireroute.kernel.run import Result
    from fireroute.state.store import Store

    for argv in setup:
        if argv[0] == "fireroute":
            host.fireroute(*argv[1:], "--backend", "iptables")
        else:
            host.run(*argv)

    def runner(argv: list[str], stdin: str | None) -> Result:
        p = host.run(*argv, check=False)
        return Result(p.returncode, p.stdout, p.stderr)

    recorded = (
        Store(str(host.state), create=False).meta(scope.IPT_MADE) if host.state.exists() else None
    )
    rules, shown, _, _ = observe.iptables_save(runner)
    read = scope.saved_chains(shown, rules, recorded)
    assert (read is not None) == sure
    truth = scope.made_record(recorded, scope.would_make(observe.nft_ip_chains(runner)))
    if read is not None:
        assert scope.made_record(recorded, scope.would_make(read)) == truth


NFT_NAT = """\
table ip nat {
  set kept { type ipv4_addr; elements = { 10.9.9.9 } }
  chain POSTROUTING { type nat hook postrouting priority 100; ip saddr @kept masquerade; }
}
"""
"""an operator's nat table written with nft itself (a set: iptables-nft cannot read it)"""


def test_a_nat_table_iptables_cannot_read_is_refused_and_left_alone(host: Host):
    """iptables-nft-save prints none of the rules of a table made with nft directly, so a rule
    of fireroute's there could be neither found, checked nor removed (it went in, and stayed
    after its VM, and an earlier version of up took the table for its own and removed it whole
    with its last VM): up is refused in one line before anything changes, and the table stays
    as it was. The control: the same table made by iptables-nft (with an operator's rule) takes
    fireroute's rules, and keeps the operator's after fireroute's last VM."""
    host.sh(f"nft -f - <<'EOF'\n{NFT_NAT}EOF")
    before = host.run("nft", "list", "table", "ip", "nat").stdout
    out = host.fireroute("up", "a", "--backend", "iptables", check=False)
    assert out.returncode == 3 and out.stdout == "", out
    assert out.stderr.count("\n") == 1 and '"nat"' in out.stderr and "--backend nft" in out.stderr
    assert host.run("nft", "list", "table", "ip", "nat").stdout == before
    assert "fr-a" not in host.links() and len(host.fireroute("ls").stdout.splitlines()) == 1
    assert not [r for r in host.iptables_rules() if "fireroute" in r]
    # the control
    host.run("nft", "delete", "table", "ip", "nat")
    host.run("iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-s", "10.9.9.9", "-j", "MASQUERADE")
    host.fireroute("up", "a", "--backend", "iptables")
    assert [r for r in host.iptables_rules() if "MASQUERADE" in r and "fireroute:" in r]
    host.fireroute("down", "a")
    assert host.iptables_rules() == ["-A POSTROUTING -s 10.9.9.9/32 -j MASQUERADE"]


def test_a_table_made_unreadable_since_is_not_removed(host: Host):
    """A nat table fireroute's first rule brought in, written into with nft since (a set and a
    rule: iptables-nft cannot read it now), is not removed with fireroute's last VM: what is in
    it cannot be seen, so nothing says it is fireroute's alone. The control beside it: the
    filter and raw tables, which fireroute's rules also brought in and nobody touched, go."""
    host.fireroute("up", "a", "--backend", "iptables")
    host.run("nft", "add", "set", "ip", "nat", "kept", "{ type ipv4_addr; }")
    host.run("nft", "add", "rule", "ip", "nat", "POSTROUTING", "ip", "saddr", "@kept", "masquerade")
    host.fireroute("down", "a")
    tables = host.run("nft", "list", "tables").stdout.split()
    assert "nat" in tables and "filter" not in tables and "raw" not in tables, tables
    assert "ip saddr @kept masquerade" in host.run("nft", "list", "table", "ip", "nat").stdout


REFUSED = {
    # the nat rule's target one iptables-nft-restore cannot find ("Error occurred at line: N")
    "nat": r"s/^\(-A POSTROUTING .*\)-j MASQUERADE$/\1-j NOSUCHTARGET/",
    # the raw rule's target one the kernel refuses there ("line N: RULE_APPEND failed")
    "raw": r"s/^\(-A PREROUTING .*\)-j DROP$/\1-j MASQUERADE/",
}
"""an iptables-nft-restore wrapper's edit of an added rule, by the table it makes fail"""


def refusing(tmp_path: Path, edit: str) -> str:
    """A directory holding an ``iptables-nft-restore`` that passes its input through ``sed
    'EDIT'`` to the real one (put it first on PATH): the PATH prefix, ending in ":"."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "iptables-nft-restore"
    wrapper.write_text(f"#!/bin/sh\nsed '{edit}' | {shutil.which('iptables-nft-restore')} \"$@\"\n")
    wrapper.chmod(0o755)
    return f"{bin_dir}:"


@pytest.mark.parametrize("table", sorted(REFUSED))
def test_a_table_refused_midway_leaves_nothing_of_the_up(host: Host, tmp_path, table: str):
    """iptables-nft-restore commits each table's section in turn and stops at the first it
    cannot (a wrapper gives a rule a target that fails: nat's, after filter and raw, one
    iptables-nft-restore cannot find; raw's, after filter, one the kernel refuses there; each
    names its line its own way): the up fails, naming the rule that failed, and the rules of
    the sections committed before are taken out again with the rest of it (before, they
    stayed: add is all or nothing), and so are the tables and chains its rules brought in
    (before, empty ones stayed): the ruleset is as it was. The control: the same up without
    the wrapper is made whole."""
    env = {"PATH": refusing(tmp_path, REFUSED[table]) + os.environ["PATH"]}
    assert host.nft_text() == ""  # (a host with no ruleset at all)
    out = host.fireroute("up", "a", "--backend", "iptables", check=False, env=env)
    assert out.returncode != 0 and "rollback" not in out.stderr, out.stderr
    assert out.stderr.startswith("fireroute: cannot add iptables rule"), out.stderr  # (its own)
    assert not [r for r in host.iptables_rules() if "fireroute" in r], host.iptables_rules()
    assert "fr-a" not in host.links() and len(host.fireroute("ls").stdout.splitlines()) == 1
    assert host.nft_text() == "", host.nft_text()  # no empty table or chain left
    host.fireroute("up", "a", "--backend", "iptables")  # the control
    assert len([r for r in host.iptables_rules() if "fireroute:" in r]) == 12
    assert host.fireroute("check").returncode == 0


def test_a_failed_up_takes_what_it_brought_in_and_keeps_the_record_before(host: Host, tmp_path):
    """The record of what fireroute's rules brought in, when an up that brings in more
    fails: what it brought in (raw, here: the earlier VMs' record has none) goes with its
    rules, and the record is the one before it (before, the failed up dropped the record
    whole, and the last VM's teardown then left filter and nat behind). The control: that
    teardown leaves the ruleset as it was before the first VM."""
    import sqlite3

    older = before_raw(host)
    env = {"PATH": refusing(tmp_path, REFUSED["nat"]) + os.environ["PATH"]}
    out = host.fireroute("up", "b", "--backend", "iptables", check=False, env=env)
    assert out.returncode != 0 and "fr-b" not in host.links(), out.stderr
    assert "table ip raw" not in host.nft_text()  # brought in by the failed up: gone
    db = sqlite3.connect(host.state)
    (now,) = db.execute("SELECT value FROM meta WHERE key = 'ipt_made'").fetchone()
    db.close()
    assert now == older
    host.fireroute("teardown")  # the control
    assert host.nft_text() == ""


@pytest.mark.parametrize(
    "script",
    [
        "add table ip nat\n"  # nat's POSTROUTING at another priority than iptables-nft's
        "add chain ip nat POSTROUTING { type nat hook postrouting priority 50; policy accept; }\n",
        "add table ip raw\nadd chain ip raw PREROUTING\n",  # a regular chain of that name
    ],
)
def test_a_chain_of_ours_written_with_nft_is_refused_before_anything(host: Host, script: str):
    """A chain fireroute's iptables rules go into that exists but is not the base chain
    iptables-nft makes refuses iptables-nft's rules, after the tables before it in the restore
    were committed: up refuses the host in one line before changing anything (no table, rule
    or tap made). The control: a table holding another base chain of the operator's (which
    iptables-nft-save also calls incompatible) takes fireroute's rules, and keeps its chain."""
    host.sh(f"nft -f - <<'EOF'\n{script}EOF")
    before = host.run("nft", "list", "ruleset").stdout
    out = host.fireroute("up", "a", "--backend", "iptables", check=False)
    assert out.returncode == 3 and out.stderr.count("\n") == 1, out
    assert "not the base chain iptables-nft makes" in out.stderr, out.stderr
    assert "--backend nft" in out.stderr
    assert host.run("nft", "list", "ruleset").stdout == before
    assert "fr-a" not in host.links()
    # the control
    host.run("nft", "flush", "ruleset")
    host.sh("nft add table ip filter; nft 'add chain ip filter mine "
            "{ type filter hook forward priority 10; policy accept; }'")  # fmt: skip
    assert "incompatible base-chains" in host.run("iptables-nft-save").stdout
    host.fireroute("up", "a", "--backend", "iptables")
    assert len([r for r in host.iptables_rules() if "fireroute:" in r]) == 12
    host.fireroute("down", "a")
    assert "chain mine" in host.run("nft", "list", "table", "ip", "filter").stdout


CLAIM = """
import sys
from fireroute import Host
from fireroute.errors import FirerouteError
h = Host(sys.argv[1])
shape = {"backend": "iptables", "uplink": "up0"}
if sys.argv[2] == "fill":
    h.ready_fill(1, shape)
else:
    try:
        h.ready_claim("web-1", shape)
    except FirerouteError as e:
        print("refused", e)
"""


def test_a_claim_refused_midway_leaves_the_ready_vm_as_it_was(host: Host, tmp_path):
    """A ready VM's claim on the iptables backend is one iptables-nft-restore (each table: the
    new rules, then the old ones' removal): when a table is refused after others were
    committed (a wrapper gives the claiming VM's nat rule a target that fails), the committed
    tables are put back exactly (each table's removals undone on their own: before, every old
    rule was made again after the first table, and the others' stood twice), and `check` is
    clean. The control: the same claim without the wrapper renames every rule."""
    refused = refusing(
        tmp_path, r"s/^\(-A POSTROUTING .*web-1.*\)-j MASQUERADE$/\1-j NOSUCHTARGET/"
    )

    def api(*args: str, path: str = "") -> str:
        env = f"PATH={path}{os.environ['PATH']}"
        argv = f"env {env} {sys.executable} -c '{CLAIM}' {host.state} {' '.join(args)}"
        return host.sh(argv).stdout

    api("fill")
    before = sorted(host.iptables_rules())
    assert len([r for r in before if ":_ready-0" in r]) == 11
    assert api("claim", path=refused).startswith("refused")
    assert sorted(host.iptables_rules()) == before
    assert host.fireroute("check").returncode == 0
    assert api("claim") == ""  # the control
    assert len([r for r in host.iptables_rules() if ":web-1" in r]) == 11
    assert not [r for r in host.iptables_rules() if ":_ready-0" in r]


def test_check_and_restore_say_when_a_table_became_unreadable(host: Host):
    """A nat table written with nft since fireroute's rules went in (a set and a rule of the
    operator's): iptables-nft-save shows none of its rules, so `check` cannot tell whether
    fireroute's are there and `restore` would write them twice: both refuse in one line
    naming the table (before: check reported the rule missing, and each restore added one
    more). The control: check is clean before the table is written into."""
    host.fireroute("up", "a", "--backend", "iptables")
    assert host.fireroute("check").returncode == 0  # the control
    host.run("nft", "add", "set", "ip", "nat", "kept", "{ type ipv4_addr; }")
    host.run("nft", "add", "rule", "ip", "nat", "POSTROUTING", "ip", "saddr", "@kept", "masquerade")
    listing = host.run("nft", "list", "table", "ip", "nat").stdout
    for verb in ("check", "restore"):
        out = host.fireroute(verb, check=False)
        assert out.returncode == 3 and out.stderr.count("\n") == 1, out
        assert '"nat"' in out.stderr and "cannot read" in out.stderr, out.stderr
    assert host.run("nft", "list", "table", "ip", "nat").stdout == listing


@pytest.mark.parametrize(
    ("dropped", "verb"),
    [(["FORWARD"], "down"), (["FORWARD", "INPUT"], "down"), (["INPUT"], "teardown")],
)
def test_a_chain_fireroute_brought_in_whose_policy_was_set_to_drop_stays(
    host: Host, dropped: list[str], verb: str
):
    """An operator sets a DROP policy on a filter chain fireroute's first rules brought in:
    fireroute's last VM leaves that chain and its table (before, the chain went as empty and
    the DROP with it: the host forwarded everything). The controls, in the same down: the
    chains and tables fireroute brought in whose policy still accepts (raw, nat, and INPUT
    where it is not dropped) go as before."""
    assert host.nft_text() == ""
    host.fireroute("up", "a", "--backend", "iptables")
    for chain in dropped:
        host.run("iptables-nft", "-P", chain, "DROP")
    gone = host.fireroute(verb, *(["a"] if verb == "down" else []))
    assert gone.returncode == 0 and (verb != "down" or gone.stdout == "vm a down\n")
    doc = json.loads(host.run("nft", "-j", "list", "chains").stdout)["nftables"]
    left = {(c["table"], c["name"], c["policy"]) for c in [i.get("chain") for i in doc] if c}
    assert left == {("filter", chain, "drop") for chain in dropped}, left
    assert host.run("nft", "list", "tables").stdout.split() == ["table", "ip", "filter"]
    assert host.fireroute("ls").stdout.splitlines()[1:] == []


@pytest.mark.parametrize("verb", ["down", "teardown"])
def test_a_vm_going_takes_its_rules_from_a_table_become_unreadable(host: Host, verb: str):
    """A nat table written with nft since fireroute's rules went in: its rules are unseen,
    so the going VM's are deleted as they were written (before, its masquerade rule stayed,
    and nothing said so), and the operator's set and rule stay, with the table. The control
    beside it: the readable filter and raw tables lose the VM's rules as always."""
    host.fireroute("up", "a", "--backend", "iptables")
    host.run("nft", "add", "set", "ip", "nat", "kept", "{ type ipv4_addr; }")
    host.run("nft", "add", "rule", "ip", "nat", "POSTROUTING", "ip", "saddr", "@kept", "masquerade")
    assert "172.16.0.2" in host.run("nft", "list", "table", "ip", "nat").stdout
    host.fireroute(*(["down", "a"] if verb == "down" else ["teardown"]))
    nat = host.run("nft", "list", "table", "ip", "nat").stdout
    assert "172.16.0.2" not in nat and "ip saddr @kept masquerade" in nat, nat
    assert not [r for r in host.iptables_rules() if "fireroute" in r]
    assert "fr-a" not in host.links()
