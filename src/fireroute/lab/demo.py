"""``fireroute demo``: fireroute's NAT networking shown end to end, safely.

Everything happens inside a throwaway :class:`~fireroute.lab.sandbox.Sandbox` (a "host"
namespace where fireroute runs, and an "internet" namespace behind its uplink with an HTTP
server that reports the client address). The VM networks are made by the real CLI in the host
namespace (``fireroute up ... --json``), a guest boots on each tap when QEMU and the guest
image are available, and each guest proves: it reaches its gateway, it fetches a page from the
internet through NAT (the server sees the host's uplink address), and the host reaches it.
Then ``fireroute teardown`` runs and the sandbox is deleted, also on Ctrl-C or any error.

Only imported for the ``demo`` command; the heavy lab modules are imported when needed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fireroute.lab.sandbox import HOST_UPLINK_IP, HTTP_PORT, INTERNET_IP, Sandbox

if TYPE_CHECKING:
    from fireroute.lab.vmm import Guest

__all__ = ["run_demo"]

BACKENDS = ("nft", "iptables")
MAX_VMS = 256
OK, FAIL, SKIPPED = "ok", "FAIL", "skipped"
CHECKS = ("gateway", "internet", "host->guest")
PAGE = "hello-from-internet client="


@dataclass
class _Vm:
    record: dict
    guest: Guest | None = None
    results: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CHECKS, SKIPPED))
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.record["name"]


class _Say:
    """Progress lines on stderr, with the time since the demo started."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        with self.lock:
            sys.stderr.write(f"[{time.monotonic() - self.start:6.2f}s] {msg}\n")
            sys.stderr.flush()


def run_demo(vms: int = 3, backend: str = "nft", boot: bool = True) -> int:
    """Run the demo; 0 when every check passed, 1 otherwise (77 without root, 2 bad input)."""
    if os.geteuid() != 0:
        sys.stderr.write(
            "fireroute demo: needs root (it creates network namespaces, taps and rules); "
            "run it with sudo\n"
        )
        return 77
    if backend not in BACKENDS:
        sys.stderr.write(f'fireroute demo: unknown backend "{backend}": use nft or iptables\n')
        return 2
    if not 1 <= vms <= MAX_VMS:
        sys.stderr.write(f"fireroute demo: invalid --vms {vms}: use 1..{MAX_VMS}\n")
        return 2
    say = _Say()
    with _interrupts_as_keyboard_interrupt():
        try:
            return _demo(vms, backend, boot, say)
        except KeyboardInterrupt:
            sys.stderr.write("fireroute demo: interrupted\n")
            return 130
        except Exception as exc:  # noqa: BLE001 - cleaned up already; one line, like the CLI
            detail = getattr(exc, "stderr", None) or ""
            sys.stderr.write(
                f"fireroute demo: failed: {type(exc).__name__}: {exc} {detail}".rstrip() + "\n"
            )
            return 1


@contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP end the demo like Ctrl-C does (so the cleanup runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C (or SIGTERM) during it is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _demo(count: int, backend: str, boot: bool, say: _Say) -> int:
    names = [f"vm{i}" for i in range(1, count + 1)]
    guests: list[Guest] = []
    guests_lock = threading.Lock()
    sb = Sandbox(prefix="frdemo")
    tmp = Path(tempfile.mkdtemp(prefix="fireroute-demo-"))
    made: list[_Vm] = []
    unproven: list[str] = []
    network_ok = False
    try:
        say("creating the sandbox: a host namespace and an internet namespace")
        sb.__enter__()
        sb.state = tmp / "state.db"
        say(f"sandbox: host netns {sb.host} (uplink {HOST_UPLINK_IP}), internet netns "
            f"{sb.internet} ({INTERNET_IP}, HTTP on port {HTTP_PORT})")  # fmt: skip
        sb.start_http()
        say(f"fireroute up {' '.join(names)} --backend {backend} --json   (in {sb.host})")
        started = time.monotonic()
        up = sb.fireroute("up", *names, "--backend", backend, "--json", check=False)
        if up.returncode != 0:
            sys.stderr.write(f"fireroute demo: up failed ({up.returncode}): {up.stderr.strip()}\n")
            return 1
        made = [_Vm(record) for record in json.loads(up.stdout)]
        say(f"{len(made)} VM network(s) up in {time.monotonic() - started:.2f}s")
        network_ok = _check_network(sb, made, backend, say)
        if boot:
            image, why = _guest_image(say)
            if image is None:
                unproven.append(f"guest traffic (gateway, internet, host->guest): {why}")
            else:
                _boot_and_check(sb, image, made, tmp, guests, guests_lock, say)
        else:
            unproven.append("guest traffic (gateway, internet, host->guest): --no-boot")
        _print_table(made)
        for vm in made:
            for note in vm.notes:
                print(f"  {vm.name}: {note}")
        for what in unproven:
            print(f"not proven: {what}")
        passed = network_ok and not _falls_short(made, boot, unproven)
        if not passed:
            print("result: some checks FAILED or could not run")
        elif unproven:
            print("result: every check that ran passed (guest traffic not proven, see above)")
        else:
            print("result: every check passed")
        return 0 if passed else 1
    finally:
        with _uninterruptible():
            _cleanup(sb, tmp, guests, guests_lock, say)


def _falls_short(made: list[_Vm], boot: bool, unproven: list[str]) -> bool:
    """Whether the run falls short: a failed check, or a boot that was asked for but could
    not happen (skipped checks count as passed only with ``--no-boot``)."""
    if any(FAIL in vm.results.values() for vm in made):
        return True
    return boot and bool(unproven)


# --- network part --------------------------------------------------------------------------------


def _check_network(sb: Sandbox, made: list[_Vm], backend: str, say: _Say) -> bool:
    """Read back what ``up`` made: each tap up with its /30, forwarding on, NAT state present."""
    problems = []
    links = json.loads(sb.exec(sb.host, "ip", "-j", "addr", "show").stdout)
    by_name = {link["ifname"]: link for link in links}
    for vm in made:
        rec = vm.record
        link = by_name.get(rec["tap"])
        want = (rec["tap_ip"], rec["prefix"])
        have = {
            (a.get("local"), a.get("prefixlen"))
            for a in (link or {}).get("addr_info", [])
            if a.get("family") == "inet"
        }
        if link is None:
            problems.append(f"tap {rec['tap']} of {vm.name} is missing")
        elif want not in have or "UP" not in link.get("flags", []):
            problems.append(f"tap {rec['tap']} of {vm.name} lacks {want[0]}/{want[1]} or is down")
    forwarding = sb.exec(sb.host, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    if forwarding != "1":
        problems.append(f"net.ipv4.ip_forward is {forwarding} in the host namespace")
    if backend == "nft":
        table = made[0].record["table"]
        listed = sb.exec(sb.host, "nft", "list", "set", "ip", table, "masq", check=False)
        missing = [vm.name for vm in made if vm.record["guest_ip"] + " " not in listed.stdout]
    else:
        saved = sb.exec(sb.host, "iptables-nft-save", "-t", "nat").stdout
        tags = set()
        for line in saved.splitlines():
            argv = shlex.split(line) if line.startswith("-A ") else []
            if "MASQUERADE" in argv and "--comment" in argv:
                tags.add(argv[argv.index("--comment") + 1])
        missing = [vm.name for vm in made if f"fireroute:{vm.name}" not in tags]
    if missing:
        problems.append(f"no masquerade for {', '.join(missing)}")
    for problem in problems:
        say(f"network check FAILED: {problem}")
    if not problems:
        say(
            f"network check ok: {len(made)} tap(s) with their /30, forwarding on, "
            f"{backend} masquerade present"
        )
    return not problems


# --- guests --------------------------------------------------------------------------------------


def _guest_image(say: _Say):  # noqa: ANN202 - (GuestImage | None, reason)
    from fireroute.lab.guest import GuestUnavailable, ensure_guest_image
    from fireroute.lab.vmm import qemu_available

    if not qemu_available():
        return None, (
            "qemu-system-x86_64 is missing (apt-get install --no-install-recommends "
            "qemu-system-x86)"
        )
    say("guest image: checking the cache (a first run downloads Debian packages)")
    started = time.monotonic()
    try:
        image = ensure_guest_image(progress=lambda msg: say(f"guest image: {msg}"))
    except GuestUnavailable as exc:
        say(f"guest image unavailable: {exc}")
        return None, f"no guest image: {exc}"
    say(f"guest image ready ({image.kernel.parent}) in {time.monotonic() - started:.2f}s")
    return image, ""


def _boot_and_check(
    sb: Sandbox,
    image: object,
    made: list[_Vm],
    tmp: Path,
    guests: list[Guest],
    guests_lock: threading.Lock,
    say: _Say,
) -> None:
    from fireroute.lab.vmm import start_guest

    workers = max(1, min(len(made), os.cpu_count() or 1, 4))
    say(f"booting {len(made)} guest(s), {workers} at a time")

    stopping = threading.Event()

    def boot_and_check(vm: _Vm) -> None:
        rec = vm.record
        if stopping.is_set():
            return
        try:
            guest = start_guest(
                image,  # type: ignore[arg-type]
                netns=sb.host,
                tap=rec["tap"],
                mac=rec["mac"],
                boot_args=rec["boot_args"],
                name=f"demo-{vm.name}",
                log_path=tmp / f"{vm.name}.console.log",
            )
        except Exception as exc:  # noqa: BLE001 - one VM's failure is reported in its row
            if stopping.is_set():
                return
            vm.results = dict.fromkeys(CHECKS, FAIL)
            vm.notes.append(f"guest did not boot: {str(exc).splitlines()[0]}")
            say(f"{vm.name}: guest did not boot")
            return
        with guests_lock:
            guests.append(guest)
        vm.guest = guest
        say(f"{vm.name}: guest booted in {guest.boot_seconds:.2f}s with {rec['boot_args']}")
        if guest.net_status != "ok":
            vm.notes.append(f"the guest's ipconfig reported net={guest.net_status}")
        if not stopping.is_set():
            _run_checks(sb, vm)
        guest.stop()  # free the CPU for the next boot; its results are in

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-guest")
    futures = [pool.submit(boot_and_check, vm) for vm in made]
    try:
        for future in futures:
            future.result()
    except BaseException:
        # Ctrl-C or an error: no new boots, and kill the VMMs until every worker is done, so
        # boots and checks in flight end at once (a plain ``with`` would wait for all of them).
        with _uninterruptible():
            stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            # Not concurrent.futures.wait: it never counts a future cancelled by shutdown.
            while not all(f.done() for f in futures):
                _kill_namespace_processes(sb.host)
                time.sleep(0.1)
        raise
    pool.shutdown(wait=True)


def _run_checks(sb: Sandbox, vm: _Vm) -> None:
    from fireroute.lab.vmm import GuestError

    guest, rec = vm.guest, vm.record
    assert guest is not None

    def guest_check(command: str, timeout: float = 15) -> tuple[int, str]:
        try:
            return guest.run(command, timeout=timeout)
        except GuestError as exc:
            return -1, str(exc)

    status, output = guest_check(f"ping -c1 -W3 {rec['tap_ip']}")
    vm.results["gateway"] = OK if status == 0 else FAIL
    if status != 0:
        vm.notes.append(f"ping {rec['tap_ip']} from the guest failed: {_last_line(output)}")

    fetch = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 " + f"{INTERNET_IP} {HTTP_PORT}"
    status, output = guest_check(fetch)
    client = None
    for line in output.splitlines():
        if line.startswith(PAGE):
            client = line[len(PAGE) :].strip()
    if client == HOST_UPLINK_IP:
        vm.results["internet"] = OK
    else:
        vm.results["internet"] = FAIL
        vm.notes.append(
            f"http://{INTERNET_IP}/ not fetched: {_last_line(output)}"
            if client is None
            else f"internet saw source {client}, not the host uplink {HOST_UPLINK_IP} (no NAT)"
        )

    ping = sb.exec(sb.host, *_ping_argv(), "-c1", "-W3", rec["guest_ip"], check=False)
    vm.results["host->guest"] = OK if ping.returncode == 0 else FAIL
    if ping.returncode != 0:
        vm.notes.append(f"ping {rec['guest_ip']} from the host failed: {_last_line(ping.stdout)}")


def _ping_argv() -> list[str]:
    import shutil

    return ["ping"] if shutil.which("ping") else ["busybox", "ping"]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# --- output and cleanup --------------------------------------------------------------------------


def _print_table(made: list[_Vm]) -> None:
    header = ("VM", "TAP", "GUEST-IP", "MAC", "BOOT-ARG", "GATEWAY", "INTERNET", "HOST->GUEST")
    rows = [header] + [
        (
            vm.name,
            vm.record["tap"],
            vm.record["guest_ip"],
            vm.record["mac"],
            vm.record["boot_args"],
            *(vm.results[c] for c in CHECKS),
        )
        for vm in made
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    sys.stdout.flush()


def _cleanup(
    sb: Sandbox,
    tmp: Path,
    guests: list[Guest],
    guests_lock: threading.Lock,
    say: Callable[[str], None],
) -> None:
    """Stop every guest, ``fireroute teardown``, delete the sandbox and the temp dir."""
    with guests_lock:
        running = list(guests)
    for guest in running:
        guest.stop()
    if sb.host:
        # A VMM still booting (Ctrl-C mid-boot) is not in ``guests`` yet: end every process
        # left in the host namespace, which the demo created and nothing else uses.
        _kill_namespace_processes(sb.host)
        state_exists = sb.state.exists()
        if state_exists:
            td = sb.fireroute("teardown", check=False)
            if td.returncode != 0:
                say(f"fireroute teardown failed ({td.returncode}): {td.stderr.strip()}")
            else:
                say(td.stdout.strip())
    sb.close()
    leftover = [ns for ns in (sb.host, sb.internet) if ns and _netns_exists(ns)]
    if leftover:
        say(f"WARNING: could not delete namespace(s) {', '.join(leftover)}")
    elif sb.host:
        say(f"sandbox removed (namespaces {sb.host} and {sb.internet} deleted)")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


def _kill_namespace_processes(netns: str) -> None:
    listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    pids = [int(p) for p in listed.stdout.split() if p.isdigit()]
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
        if pids:
            time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()
