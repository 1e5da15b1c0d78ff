"""Generated command lines through the real CLI in one namespace: every case ends in exit 0 or
one clear line on stderr with a non-zero exit, never a traceback, and a failing case changes
neither the kernel nor the state file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Host, make_host, skip_unless_root
from tests.reliability.helpers import inet_addrs, one_line_error

pytestmark = pytest.mark.privileged

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

ODD = "aZ09._-/: \t\n\"'$;`\\|&*?[]{}()<>#%!~,=+@é€٣²\u200b\x1b\x7f"
names = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True),
    st.text(alphabet=ODD, min_size=0, max_size=20),
    st.sampled_from(["-", "--", "-x", "..", ".", "a" * 64, "a" * 63, "fr-x", "up0", "lo"]),
)
ints = st.integers(-3, 40).map(str)
VALUES = {
    "--pool": st.one_of(
        st.sampled_from(
            [
                "172.16.0.0/16",
                "10.0.0.0/8",
                "10.1.2.0/24",
                "10.1.2.0/30",
                "10.1.2.0/31",
                "10.1.2.3/24",
                "203.0.113.0/24",
                "127.0.0.0/8",
                "0.0.0.0/0",
                "255.255.255.252/30",
                "224.0.0.0/24",
                "fd00::/64",
                "10.0.0.0/-1",
                "10.0.0.0/33",
                "010.0.0.0/8",
                "",
            ]
        ),
        st.text(alphabet=ODD + "0123456789./", max_size=18),
    ),
    "--block-size": st.one_of(ints, st.sampled_from(["/24", "/30", "//30", "٣٠", "²", "3e1", ""])),
    "--mac": st.one_of(
        st.sampled_from(["06:00:AC:10:00:02", "07:00:00:00:00:01", "06:00:ac:10:00:0g", ""]),
        st.text(alphabet="0123456789abcdefABCDEF:-", max_size=20),
    ),
    "--dns": st.one_of(
        st.sampled_from(["8.8.8.8", "1.1.1.1", "8.8.8", "::1", "08.8.8.8", "256.1.1.1"]),
        st.text(alphabet=ODD + "0123456789.", max_size=16),
    ),
    "--owner": st.one_of(
        st.sampled_from(["0", "1000:1000", "1000:", ":5", "-1", "4294967295", "a:b", ""]),
        st.text(alphabet="0123456789:-+_ ", max_size=14),
    ),
    "--tap": names,
    "--table": st.one_of(
        st.sampled_from(["firecracker", "fr2", "t" * 33, "1abc", "ip", "table", "counter", "vms"]),
        names,
    ),
    "--uplink": st.sampled_from(["up0", "lo", "nope0", "", "up0 ", "x" * 16]),
    "--backend": st.sampled_from(["nft", "iptables", "pf", "", "NFT"]),
    "--count": st.one_of(st.integers(-2, 4).map(str), st.sampled_from(["65537", "x", "1e2", ""])),
    "--prefix": names,
    "--guest-iface": names,
    "--iface-id": names,
}
FLAGS = ["--skip-conflicts", "--json", "--frobnicate", "-x", "--count=2", "--", "--help"]


@st.composite
def command_lines(draw, verb: str) -> list[str]:
    groups = [[n] for n in draw(st.lists(names, max_size=3))]
    for opt in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=4)):
        groups.append([opt, draw(VALUES[opt])])
    groups += [[f] for f in draw(st.lists(st.sampled_from(FLAGS), max_size=1))]
    return [verb, *(arg for group in draw(st.permutations(groups)) for arg in group)]


@pytest.fixture(scope="module")
def fhost(tmp_path_factory) -> Iterator[Host]:
    skip_unless_root("create network namespaces")
    yield from make_host(tmp_path_factory.mktemp("fuzz"), "fz")


def cli(host: Host, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", host.ns, sys.executable, "-m", "fireroute", *argv],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FIREROUTE_STATE": str(host.state)}
        | ({"PYTHONPATH": p} if (p := __import__("os").environ.get("PYTHONPATH")) else {}),
        timeout=60,
    )


def kernel(host: Host) -> tuple:
    links = {
        n: (inet_addrs(d), sorted(d["flags"]), d.get("ifalias")) for n, d in host.links().items()
    }
    ls = cli(host, ["ls", "--json"])
    return links, host.nft_text(), host.iptables_rules(), host.forwarding(), ls.stdout


def judge(p: subprocess.CompletedProcess) -> None:
    if p.returncode == 0:
        assert "Traceback" not in p.stderr
        return
    one_line_error(p.returncode, p.stderr)


@SETTINGS
@given(argv=command_lines("plan"))
@example(argv=["plan", "a", "--block-size", "²"])
@example(argv=["plan", "a\nb"])
@example(argv=["plan", "a", "--table", "counter"])
def test_fuzz_plan_never_crashes(fhost: Host, argv: list[str]):
    """Any plan command line: a clean answer or a one-line error, and nothing changed."""
    before = kernel(fhost)
    judge(cli(fhost, argv))
    assert kernel(fhost) == before


@pytest.fixture(scope="module")
def baseline(fhost: Host) -> tuple:
    fhost.run("ip", "tuntap", "add", "dev", "fr-foreign", "mode", "tap")  # foreign, same prefix
    cli(fhost, ["up", "keep"]).check_returncode()  # one VM of ours is there all along
    return kernel(fhost)


@settings(SETTINGS, max_examples=120)
@given(argv=command_lines("up"))
@example(argv=["up", "a", "--table", "table"])
@example(argv=["up", "a\nb", "--tap", "x"])
def test_fuzz_up_fails_cleanly_or_round_trips(fhost: Host, baseline: tuple, argv: list[str]):
    """A failing up changes nothing; a succeeding one is undone exactly by down."""
    p = cli(fhost, argv)
    judge(p)
    if p.returncode == 0 and "--help" not in argv:
        made = [v["name"] for v in json.loads(cli(fhost, ["ls", "--json"]).stdout)]
        gone = [n for n in made if n != "keep"]
        if gone:
            d = cli(fhost, ["down", *gone])
            assert d.returncode == 0, d.stderr
    assert kernel(fhost) == baseline


@settings(SETTINGS, max_examples=40)
@given(uid=st.integers(0, 2**33), gid=st.one_of(st.none(), st.integers(0, 2**33)))
@example(uid=0, gid=99999999999)
def test_owner_is_applied_exactly_or_refused(fhost: Host, baseline: tuple, uid: int, gid):
    owner = f"{uid}" if gid is None else f"{uid}:{gid}"
    p = cli(fhost, ["up", "own", "--owner", owner, "--tap", "fr-own"])
    judge(p)
    try:
        if p.returncode == 0:
            got = fhost.run("cat", "/sys/class/net/fr-own/owner", "/sys/class/net/fr-own/group")
            want_gid = -1 if gid is None else gid
            assert got.stdout.split() == [str(uid), str(want_gid)], (owner, got.stdout)
    finally:
        cli(fhost, ["down", "own"])
    assert kernel(fhost) == baseline
