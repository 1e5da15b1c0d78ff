"""``plan`` on a populated host changes nothing (kernel and state file byte-identical), and what
it prints is exactly what ``up`` does: run by hand as a shell script, it leaves the kernel as
``up`` leaves it."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def kernel(host: Host) -> tuple:
    links = {
        d["ifname"]: (
            sorted(
                f"{a['local']}/{a['prefixlen']}"
                for a in d.get("addr_info", [])
                if a["family"] == "inet"
            ),
            d.get("ifalias"),
            d.get("group"),
            "UP" in d["flags"],
            (d.get("linkinfo") or {}).get("info_data", {}).get("user"),
        )
        for d in json.loads(host.run("ip", "-j", "-d", "addr", "show").stdout)
    }
    ruleset = re.sub(r"counter packets \d+ bytes \d+", "counter", host.nft_text())
    ipv6 = {
        n: host.run("cat", f"/proc/sys/net/ipv6/conf/{n}/disable_ipv6").stdout.strip()
        for n in links
    }
    return links, ruleset, ipv6, host.forwarding(), sorted(host.iptables_rules())


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_plan_changes_nothing_and_prints_what_up_does(host: Host, backend: str):
    host.fireroute("up", "a", "--backend", backend)
    host.fireroute("up", "b", "--backend", backend, "--allow-metadata")
    before, state = kernel(host), host.state.read_bytes()
    script = host.fireroute("plan", "c", "--backend", backend, "--dns", "9.9.9.9").stdout
    assert kernel(host) == before and host.state.read_bytes() == state  # nothing changed
    assert script.startswith("ip "), script

    host.fireroute("up", "c", "--backend", backend, "--dns", "9.9.9.9")
    by_up = kernel(host)
    assert by_up != before  # the positive control: up did change the kernel
    host.fireroute("down", "c")
    assert kernel(host) == before
    host.sh(script)  # the printed plan, typed by a person
    assert kernel(host) == by_up
