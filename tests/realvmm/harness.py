"""The real Firecracker and the probe guest, for the real-VMM tests.

The binary is the one ``FIRECRACKER_BIN`` names (never committed; the tests skip without
it). The guest is the bare-metal probe of ``../shared/firecracker/probe-guest``, built with its
``build.sh`` into the cache the Linux guest image uses (``fireroute.lab.guest``), rebuilt only
when its sources change. It reads fireroute's ``ip=`` argument and its MAC from the
virtio-net device, pings its gateway, optionally pings one more address and sends UDP
datagrams, prints ``PROBE ...`` lines on the serial console and resets, which ends
Firecracker. Every Firecracker runs inside a namespace the test made and is killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fireroute.firecracker.client import FirecrackerClient
from fireroute.lab.guest import default_cache_dir
from tests.conftest import SHARED, needs_root_to

ENV = "FIRECRACKER_BIN"
SKIP_REASON = f"{ENV} is not set: point it at a firecracker binary to run the real-VMM tests"
PROBE_SOURCES = SHARED / "firecracker" / "probe-guest"

REALVMM_MARKS = [
    pytest.mark.skipif(not os.environ.get(ENV), reason=SKIP_REASON),
    needs_root_to("create network namespaces/taps"),
]


def firecracker_bin() -> str:
    path = os.environ[ENV]
    assert os.access(path, os.X_OK), f"{ENV}={path} is not an executable file"
    return path


def build_probe() -> Path:
    """The probe's ELF, built (or found current) in the guest image cache."""
    script = PROBE_SOURCES / "build.sh"
    if not script.is_file():
        pytest.skip(f"the probe guest's sources are missing: {script}")
    out = default_cache_dir() / "probe-guest" / "probe-guest.elf"
    p = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "PROBE_OUT": str(out)},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, f"building the probe guest failed:\n{p.stderr}"
    return Path(p.stdout.strip())


def host_tsc_khz() -> int | None:
    """The host's TSC in kHz, so the probe skips its 10 ms calibration against the PIT."""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return None


# --- the probe's console ------------------------------------------------------------------


@dataclass
class Probe:
    """The ``PROBE`` lines of one run."""

    lines: list[str]

    @classmethod
    def parse(cls, console: str) -> Probe:
        return cls([ln.strip() for ln in console.splitlines() if ln.startswith("PROBE ")])

    def line(self, prefix: str) -> str | None:
        return next((ln for ln in self.lines if ln.startswith("PROBE " + prefix)), None)

    def fields(self, prefix: str) -> dict[str, str]:
        found = self.line(prefix)
        assert found is not None, f"no 'PROBE {prefix}' line in:\n" + "\n".join(self.lines)
        return dict(w.split("=", 1) for w in found.split() if "=" in w)

    def ok(self, prefix: str) -> bool:
        found = self.line(prefix)
        return found is not None and " ok " in found + " "

    def __str__(self) -> str:
        return "\n".join(self.lines)


# --- one Firecracker -----------------------------------------------------------------------


@dataclass
class Jail:
    """Firecracker as a jailer leaves it: an unprivileged uid/gid, no capabilities, and its own
    ``/dev/kvm`` and ``/dev/net/tun`` nodes owned by that uid (bind-mounted in a private mount
    namespace, as the jailer makes them in its chroot)."""

    uid: int
    nodes: Path | None = None  # where the device nodes are made: Lab gives a scratch directory

    def wrap(self, argv: list[str]) -> list[str]:
        assert self.nodes is not None
        for name, (major, minor) in (("kvm", (10, 232)), ("tun", (10, 200))):
            node = self.nodes / name
            if not node.exists():
                os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(major, minor))
            os.chown(node, self.uid, self.uid)
        script = (
            'mount --bind "$1" /dev/kvm && mount --bind "$2" /dev/net/tun && shift 2 && '
            f"exec setpriv --reuid={self.uid} --regid={self.uid} --clear-groups "
            '--inh-caps=-all --bounding-set=-all "$@"'
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-ec",
            script,
            "jail",
            str(self.nodes / "kvm"),
            str(self.nodes / "tun"),
            *argv,
        ]


@dataclass
class Firecracker:
    """A Firecracker process in the network namespace ``netns`` (a path), its serial console
    in ``workdir/NAME.console``. ``api`` False: ``--no-api --config-file``."""

    binary: str
    netns: str
    workdir: Path
    name: str
    jail: Jail | None = None
    config_file: Path | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    _console: object = field(default=None, repr=False)

    @property
    def socket(self) -> str:
        return str(self.workdir / f"{self.name}.sock")

    @property
    def console_path(self) -> Path:
        return self.workdir / f"{self.name}.console"

    def start(self) -> Firecracker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        if self.config_file is not None:
            argv = [self.binary, "--no-api", "--config-file", str(self.config_file)]
        else:
            argv = [self.binary, "--api-sock", self.socket]
        argv += ["--id", self.name]
        if self.jail is not None:
            os.chown(self.workdir, self.jail.uid, self.jail.uid)
            argv = self.jail.wrap(argv)
        self._console = open(self.console_path, "wb")  # noqa: SIM115 (closed by stop)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={self.netns}", *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
        )
        if self.config_file is None:
            self._wait_socket()
        return self

    def _wait_socket(self, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"firecracker did not open its socket:\n{self.console()}")
            time.sleep(0.01)

    @property
    def client(self) -> FirecrackerClient:
        return FirecrackerClient(self.socket, timeout=5.0)

    def boot(self, kernel: Path, boot_args: str) -> None:
        """The rest of the VM through the API (the boot source, one vCPU, 64 MiB), then
        InstanceStart. Before 1.0 ``machine-config`` requires ``ht_enabled``, from 1.0 on it
        refuses it: this is the harness configuring its VMM, not fireroute."""
        c = self.client
        c.put("/boot-source", {"kernel_image_path": str(kernel), "boot_args": boot_args})
        self.machine_config()
        self.start_instance()

    def machine_config(self) -> None:
        body: dict = {"vcpu_count": 1, "mem_size_mib": 64}
        if self.client.version() < (1, 0, 0):
            body["ht_enabled"] = False
        self.client.put("/machine-config", body)

    def start_instance(self) -> None:
        self.started_at = time.monotonic()
        self.client.put("/actions", {"action_type": "InstanceStart"})

    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_line(self, prefix: str, timeout: float = 20.0) -> Probe:
        """Wait until a ``PROBE <prefix>`` line is on the console (the guest still runs)."""
        end = time.monotonic() + timeout
        while True:
            probe = Probe.parse(self.console())
            if probe.line(prefix) is not None:
                return probe
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"no 'PROBE {prefix}' line:\n{self.console()}")
            time.sleep(0.01)

    def wait(self, timeout: float = 30.0) -> Probe:
        """Wait for Firecracker to exit (the probe resets the machine at its end)."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"firecracker still ran after {timeout}s:\n{self.console()}"
            ) from None
        probe = Probe.parse(self.console())
        assert rc == 0 and probe.line("done") is not None, (
            f"firecracker exited {rc}:\n{self.console()}"
        )
        return probe

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._console is not None:
            self._console.close()  # type: ignore[attr-defined]
            self._console = None


# --- a UDP sink -----------------------------------------------------------------------------

_SINK = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
idle, limit = float(sys.argv[3]), float(sys.argv[4])
print("ready", flush=True)
seen, end = [], time.monotonic() + limit
s.settimeout(limit)
while time.monotonic() < end:
    try:
        data, (src, port) = s.recvfrom(65536)
    except TimeoutError:
        break
    seen.append([src, port, data[:24].decode("ascii", "replace"), len(data)])
    s.settimeout(idle)
print(json.dumps(seen), flush=True)
"""


class UdpSink:
    """Counts the UDP datagrams reaching ADDRESS:PORT inside namespace ``ns`` (a name): each
    with its source address and port, payload marker and size. It stops ``idle`` seconds after
    the last datagram, or ``limit`` seconds after it started."""

    def __init__(self, ns: str, address: str, port: int, idle: float = 1.0, limit: float = 30):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _SINK, address, str(port)]
            + [str(idle), str(limit)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        started = ready and self.proc.stdout.readline().strip() == "ready"
        assert started, "the UDP sink did not start"

    def datagrams(self, timeout: float = 60) -> list[list]:
        import json

        out, _ = self.proc.communicate(timeout=timeout)
        return json.loads(out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- a sandbox with fireroute and Firecrackers in it ----------------------------------------


@dataclass
class Lab:
    """A :class:`~fireroute.lab.sandbox.Sandbox` (host namespace, uplink, internet namespace)
    with its own state file, the Firecracker binary and the probe; every Firecracker it started
    is killed by :meth:`close`."""

    sb: object  # fireroute.lab.sandbox.Sandbox
    workdir: Path
    binary: str
    kernel: Path
    vmms: list[Firecracker] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)

    @property
    def host_netns(self) -> str:
        return f"/var/run/netns/{self.sb.host}"  # type: ignore[attr-defined]

    def fireroute(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = self.sb.fireroute(*args, check=False)  # type: ignore[attr-defined]
        if check:
            assert p.returncode == 0, f"fireroute {' '.join(args)}: {p.stderr}{p.stdout}"
        return p

    def up(self, name: str, *flags: str) -> dict:
        import json

        doc = json.loads(self.fireroute("up", name, "--json", *flags).stdout)
        return doc[0] if isinstance(doc, list) else self.show(name)  # with --socket: a report

    def show(self, name: str) -> dict:
        import json

        return json.loads(self.fireroute("show", name, "--json").stdout)

    def firecracker(
        self, name: str, *, netns: str | None = None, jail: Jail | None = None, **kw: object
    ) -> Firecracker:
        """A Firecracker in the host namespace (or ``netns``), started, not yet booted. A
        jailed one works in a directory of its own under /tmp (pytest's are root's alone)."""
        workdir = self.workdir / name
        if jail is not None:
            workdir = Path(tempfile.mkdtemp(prefix=f"frvm-{name}-"))
            jail.nodes = Path(tempfile.mkdtemp(prefix=f"frvm-{name}-dev-"))
            self.scratch += [workdir, jail.nodes]
        fc = Firecracker(self.binary, netns or self.host_netns, workdir, name, jail=jail, **kw)
        self.vmms.append(fc)
        return fc.start()

    def close(self) -> None:
        for fc in self.vmms:
            fc.stop()
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)


def probe_args(boot_args: str, **probe: object) -> str:
    """``boot_args`` (fireroute's ``ip=``) plus ``probe.KEY=VALUE`` arguments."""
    extra = {"tsc_khz": host_tsc_khz(), **probe}
    return " ".join([boot_args, *(f"probe.{k}={v}" for k, v in extra.items() if v is not None)])


def assert_identity(probe: Probe, record: dict) -> None:
    """The guest took fireroute's MAC from the device and its address from ``ip=``, and
    reached its gateway."""
    ident = probe.fields("mac=")
    assert ident["mac"].lower() == record["mac"].lower(), probe
    assert ident["mac_source"] == "device", probe
    assert (ident["ip"], ident["gw"], ident["mask"]) == (
        record["guest_ip"],
        record["tap_ip"],
        record["netmask"],
    ), probe
    assert probe.ok("ping gw"), probe
