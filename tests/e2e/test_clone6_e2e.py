"""End to end: two snapshot clones with IPv6 (issue 24 step 14), booted at once.

Both guests have the same IPv4 and IPv6 addresses, MAC and tap name, each in its own clone
namespace made by ``fireroute up --mode clone --ipv6`` from a global pool that the internet
routes to the host (so the host forwards without NAT66 and the internet sees the clones' own
addresses). Each guest is configured only by fireroute's guest script (``fireroute.v6=script``:
it takes no router advertisement). Both fetch the internet's IPv6 page, whose server logs two
distinct clone addresses; the host reaches each guest at its clone's address; and without the
namespace's SNAT66 the fetch fails (the control that the address the internet saw is the
namespace's doing; the other clone is unaffected, and check names the chain). Nothing touches
the root namespace.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fireroute.lab.guest import GuestImage, v6_boot_arg
from fireroute.lab.sandbox import Sandbox
from tests.e2e.common import E2E_MARKS
from tests.e2e.test_ipv6_e2e import PAGE, fetch6, internet6, settled, wait_for_http
from tests.e2e.test_modes_e2e import LISTEN, boot_all, up
from tests.kernel.test_clone6 import CONNECT, POOL6, clone_address
from tests.kernel.test_isolation6 import INTERNET6, UPLINK6

pytestmark = E2E_MARKS


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, Path]]:
    with tempfile.TemporaryDirectory() as tmp, Sandbox(prefix="frcl6") as sb:
        sb.state = Path(tmp) / "state.db"
        log = internet6(sb, Path(tmp))
        sb.exec(sb.internet, "ip", "-6", "route", "add", POOL6, "via", UPLINK6, "dev", "down0")
        site = str(Path(tmp) / "site")
        http = [sys.executable, "-m", "http.server", "-b", INTERNET6, "-d", site, "80"]
        with open(log, "w") as err:
            argv = ["ip", "netns", "exec", sb.internet, *http]
            server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield sb, log
        finally:
            server.kill()
            server.wait()
            sb.fireroute("teardown", check=False)


def test_two_v6_clones_one_guest_address_two_clone_addresses(
    image: GuestImage, sandbox: tuple[Sandbox, Path], tmp_path: Path
):
    sb, log = sandbox
    c1 = up(sb, "clone-1", "--mode", "clone", "--ipv6", "--pool6", POOL6)
    c2 = up(sb, "clone-2", "--mode", "clone", "--ipv6", "--pool6", POOL6)
    assert (c1["ipv6"]["address"], c1["mac"], c1["tap"]) == (
        c2["ipv6"]["address"], c2["mac"], c2["tap"],
    )  # fmt: skip
    script = {"boot_args": v6_boot_arg("script")}  # (no ip=: the guest script does both)
    specs = [(rec["netns"], name, {**rec, **script}) for name, rec in (("c1", c1), ("c2", c2))]
    guests = boot_all(image, specs, tmp_path)
    try:
        for g, name in zip(guests, ("clone-1", "clone-2"), strict=True):
            status, out = g.run(sb.fireroute("show", name, "--format", "guest-script").stdout)
            assert status == 0, f"{g.name}: the guest script failed:\n{out}"
            status, out = settled(g, c1["ipv6"]["address"])
            assert status == 0, out
        wait_for_http(sb)
        for g in guests:
            ok, transcript = fetch6(g)
            assert ok and PAGE in transcript, f"{g.name}: {transcript}"
        seen = dict(re.findall(r'^(\S+) .*"GET /page\.txt\?from=(\w+) ', log.read_text(), re.M))
        assert {v: k for k, v in seen.items()} == {
            "c1": clone_address(c1),
            "c2": clone_address(c2),
        }, log.read_text()
        # the host reaches each guest at its clone's address (both guests have one address)
        for g, rec in zip(guests, (c1, c2), strict=True):
            status, out = g.run(LISTEN.format(name=g.name))
            assert status == 0, out
            p = sb.exec(sb.host, sys.executable, "-c", CONNECT, clone_address(rec), "8080")
            assert p.stdout.strip() == f"hello-from-{g.name}", p.stderr
        # the control: without the namespace's SNAT66 the guest's own address leaves the
        # namespace, and the host drops it (not the clone's /64); restore puts it back
        sb.exec(c1["netns"], "nft", "flush", "chain", "ip6", "fireroute_clone", "postrouting")
        ok, transcript = fetch6(guests[0])
        assert not ok, transcript
        assert fetch6(guests[1])[0]  # the other clone is unaffected
        check = sb.fireroute("check", check=False)
        assert check.returncode == 1 and "ip6 fireroute_clone" in check.stdout, check.stdout
    finally:
        for g in guests:
            g.stop()
