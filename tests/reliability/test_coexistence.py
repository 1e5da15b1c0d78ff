"""A host that already has a Docker-like iptables-nft ruleset and another nft table of its own:
fireroute's up/down/gc/teardown must leave every foreign table byte-for-byte as it was."""

from __future__ import annotations

import difflib

import pytest

from tests.conftest import Host
from tests.reliability.helpers import (
    TAG,
    assert_consistent,
    assert_nothing_ours,
    inet_addrs,
    ls,
    our_tables,
    table_blocks,
)

pytestmark = pytest.mark.privileged

DOCKER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -s 10.9.9.0/24 -j DROP
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -d 172.17.0.2/32 ! -i docker0 -j DROP
COMMIT
"""

THEIRS = """table inet theirs {
  set blocked { type ipv4_addr; flags interval; elements = { 198.51.100.0/24, 192.0.2.7 } }
  chain input { type filter hook input priority 0; policy accept;
    ip saddr @blocked counter drop
    tcp dport 22 ct state new counter accept comment "ssh"
  }
  chain forward_in { type filter hook forward priority 10; policy accept;
    iifname "docker0" oifname "up0" counter accept
  }
}
table ip firecracker2 {
  chain post { type nat hook postrouting priority 100; policy accept; oifname "up0" masquerade; }
}
"""


def setup_foreign(host: Host) -> None:
    host.run("ip", "link", "add", "docker0", "type", "bridge")
    host.run("ip", "addr", "add", "172.17.0.1/16", "dev", "docker0")
    host.run("ip", "link", "set", "docker0", "up")
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=1")  # Docker turns it on
    from tests.conftest import sh

    sh("ip", "netns", "exec", host.ns, "iptables-nft-restore", input=DOCKER)
    sh("ip", "netns", "exec", host.ns, "nft", "-f", "-", input=THEIRS)


def foreign(host: Host) -> dict[str, str]:
    """Every table that is not fireroute's own, with fireroute's tagged rules left out (the
    iptables backend adds them to iptables-nft's shared tables; nft prints their comment match
    as an empty gap, hence the double space; none of the foreign rules has a comment)."""
    ours = {f"table ip {t}" for t in our_tables(host)}
    return {
        head: "".join(
            line
            for line in text.splitlines(keepends=True)
            if TAG not in line and "  counter" not in line
        )
        for head, text in table_blocks(host.nft_text()).items()
        if head not in ours
    }


def foreign_links(host: Host) -> dict[str, tuple]:
    return {
        n: (link.get("flags"), link.get("address"), inet_addrs(link))
        for n, link in host.links().items()
        if not n.startswith("fr-")
    }


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_foreign_rulesets_survive_byte_for_byte(host: Host, backend: str):
    setup_foreign(host)
    ruleset = host.nft_text()
    tables = foreign(host)
    assert set(tables) >= {"table ip filter", "table ip nat", "table ip raw", "table inet theirs"}
    links = foreign_links(host)
    saved = [r for r in host.iptables_rules()]

    def unchanged_while_up() -> None:
        now = foreign(host)
        for head in tables:
            diff = difflib.unified_diff(tables[head].splitlines(), now.get(head, "").splitlines())
            assert now.get(head) == tables[head], "\n".join(diff)
        assert set(now) == set(tables)
        assert foreign_links(host) == links
        assert [r for r in host.iptables_rules() if TAG not in r] == saved
        assert host.forwarding() == "1"

    def unchanged_exactly() -> None:
        assert host.nft_text() == ruleset  # the whole ruleset, byte for byte
        assert foreign_links(host) == links
        assert host.iptables_rules() == saved
        assert host.forwarding() == "1"

    b = ("--backend", backend)
    host.fireroute("up", "a", *b)
    host.fireroute("up", "b", *b)
    host.fireroute("up", "--count", "5", "--prefix", "c-", *b)
    unchanged_while_up()
    assert_consistent(host)
    host.fireroute("down", "a")
    unchanged_while_up()
    host.fireroute("gc")
    unchanged_while_up()
    assert_consistent(host)
    host.fireroute("teardown")
    unchanged_exactly()
    assert_nothing_ours(host, forwarding="1")

    host.fireroute("up", "d", *b)
    host.fireroute("gc")
    unchanged_while_up()
    host.fireroute("down", "d")
    unchanged_exactly()
    host.fireroute("gc")
    host.fireroute("teardown")
    unchanged_exactly()

    # a crash half-way, then gc: still nothing foreign touched
    p = host.fireroute("up", "e", *b, env={"FIREROUTE_FAULT": "kill@1"}, check=False)
    assert p.returncode in (-9, 137)
    host.fireroute("gc")
    unchanged_exactly()
    assert_nothing_ours(host, forwarding="1")


def test_foreign_table_with_our_name_is_refused_and_kept(host: Host):
    """An ``ip firecracker`` table someone else made: up refuses it (one line), and neither
    gc nor teardown deletes it."""
    from tests.conftest import sh

    sh(
        "ip", "netns", "exec", host.ns, "nft", "-f", "-",
        input="table ip firecracker {\n chain c { type filter hook forward priority 5; }\n}\n",
    )  # fmt: skip
    before = host.nft_text()
    p = host.fireroute("up", "a", check=False)
    assert p.returncode == 3 and "not created by fireroute" in p.stderr
    assert p.stderr.count("\n") == 1
    host.fireroute("gc")
    host.fireroute("teardown")
    assert host.nft_text() == before
    assert_nothing_ours(host, forwarding="0")


def test_left_over_table_of_ours_is_taken_up(host: Host):
    """The control of the refusal above: a table of that name that is fireroute's (its
    comment) with no VM in it, left over, is taken up. The new table's exclusive create
    fails on it, is undone, and the table read then is ours: the up runs again adding to it."""
    from tests.conftest import sh

    sh(
        "ip", "netns", "exec", host.ns, "nft", "-f", "-",
        input='table ip firecracker {\n comment "fireroute"\n}\n',
    )  # fmt: skip
    host.fireroute("up", "a")
    assert_consistent(host)
    assert [v["name"] for v in ls(host)] == ["a"]
    assert "chain forward" in host.run("nft", "list", "table", "ip", "firecracker").stdout
    host.fireroute("down", "a")
    assert_nothing_ours(host, forwarding="0")


@pytest.mark.parametrize("table", ["counter", "fr"])
def test_a_table_name_nft_reads_as_a_keyword_is_refused_and_undone(host: Host, table: str):
    """A new table is created unread, so nft's refusal of the transaction names a keyword:
    one line, and what ran beside it (the tap, forwarding) is undone, the state file holds no
    VM. The control: a name that is no keyword, through the same path, works."""
    p = host.fireroute("up", "a", "--table", table, check=False)
    if table == "fr":
        assert p.returncode == 0, p.stderr
        assert [v["name"] for v in ls(host)] == ["a"]
        host.fireroute("down", "a")
    else:
        assert p.returncode == 2 and "nft reads it as a keyword" in p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert_nothing_ours(host, forwarding="0")
