"""Run a lab guest on a tap inside a network namespace and talk to it over its serial console.

QEMU (software emulation, ``-M microvm``, ``virtio-net-device`` on the tap) is what runs on
the test machines: it gives the guest the same virtio-mmio NIC Firecracker does. Firecracker
is used instead when it is installed and ``/dev/kvm`` works (:func:`select_vmm`).

The guest's ``/init`` (see :mod:`fireroute.lab.guest`) prints a ready marker, then executes
command lines sent on the console and frames their output with begin/end markers::

    with start_guest(image, netns="ns", tap="tap0", mac="06:00:ac:10:00:02",
                     boot_args="ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off") as g:
        status, output = g.run("ping -c1 -W2 172.16.0.1")
"""

from __future__ import annotations

import atexit
import base64
import codecs
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar

from fireroute.lab.guest import (
    BEGIN_MARKER,
    END_MARKER,
    READY_MARKER,
    RUN_PREFIX,
    GuestImage,
    GuestUnavailable,
)

__all__ = [
    "FirecrackerVmm",
    "Guest",
    "GuestError",
    "QemuVmm",
    "Vmm",
    "qemu_available",
    "select_vmm",
    "start_guest",
]

QEMU_BINARY = "qemu-system-x86_64"
#: The agent reads the console in canonical mode, whose lines are capped at 4095 bytes.
MAX_COMMAND_LINE = 4000
_READY_RE = re.compile(re.escape(READY_MARKER) + r" net=(\w+)@@")


class GuestError(RuntimeError):
    """The guest failed to boot, exited, or did not answer in time."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- console tail ---\n{console_tail}" if console_tail else message
        )
        self.console_tail = console_tail


# --- VMMs --------------------------------------------------------------------------------------


class Vmm(ABC):
    """How to launch a guest. The VMM's stdin/stdout must be the guest's serial console."""

    name: ClassVar[str]

    @abstractmethod
    def usable(self) -> bool:
        """Whether this VMM can run here."""

    @abstractmethod
    def command(
        self,
        image: GuestImage,
        *,
        tap: str,
        mac: str,
        boot_args: str,
        memory_mib: int,
        workdir: Path,
    ) -> list[str]:
        """The argv to run (inside the netns); may write files into ``workdir``."""


class QemuVmm(Vmm):
    """QEMU ``-M microvm`` under software emulation (TCG), serial console on stdio."""

    name = "qemu"
    #: TCG microvm stalls at t=0 without a fixed early TSC; printk stays quiet for the agent.
    kernel_args = "console=ttyS0 reboot=t panic=-1 pci=off quiet tsc_early_khz=2000000 tsc=reliable"

    def __init__(self, binary: str = QEMU_BINARY) -> None:
        self.binary = binary

    def usable(self) -> bool:
        return shutil.which(self.binary) is not None

    def command(
        self,
        image: GuestImage,
        *,
        tap: str,
        mac: str,
        boot_args: str,
        memory_mib: int,
        workdir: Path,
    ) -> list[str]:
        return [
            self.binary,
            "-M", "microvm",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-m", str(memory_mib),
            "-kernel", str(image.kernel),
            "-initrd", str(image.initramfs),
            "-append", f"{boot_args} {self.kernel_args}".strip(),
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no,vnet_hdr=on",
            "-device", f"virtio-net-device,netdev=n0,mac={mac}",
            "-chardev", "stdio,id=con,signal=off",
            "-serial", "chardev:con",
        ]  # fmt: skip


class FirecrackerVmm(Vmm):
    """``firecracker --no-api --config-file`` (needs KVM and an uncompressed ELF ``vmlinux``).

    ``network_interface`` is the ``network-interfaces`` entry to use (Firecracker API
    ``NetworkInterface``); by default ``{"iface_id": "eth0", "host_dev_name": tap,
    "guest_mac": mac}``. ``kernel`` overrides the image's kernel: Firecracker cannot boot
    Debian's compressed ``vmlinuz``.
    """

    name = "firecracker"
    kernel_args = "console=ttyS0 reboot=k panic=1 quiet"

    def __init__(
        self,
        binary: str = "firecracker",
        *,
        kernel: Path | None = None,
        network_interface: dict[str, Any] | None = None,
    ) -> None:
        self.binary = binary
        self.kernel = kernel
        self.network_interface = network_interface

    def usable(self) -> bool:
        return shutil.which(self.binary) is not None and _kvm_usable()

    def supports(self, image: GuestImage) -> bool:
        """Whether the kernel this VMM would boot is an ELF vmlinux."""
        return _is_elf(self.kernel or image.kernel)

    def config(
        self, image: GuestImage, *, tap: str, mac: str, boot_args: str, memory_mib: int, log: Path
    ) -> dict[str, Any]:
        """The ``--config-file`` document (keys per Firecracker's API, v1.16)."""
        interface = self.network_interface or {
            "iface_id": "eth0",
            "host_dev_name": tap,
            "guest_mac": mac,
        }
        return {
            "boot-source": {
                "kernel_image_path": str(self.kernel or image.kernel),
                "initrd_path": str(image.initramfs),
                "boot_args": f"{boot_args} {self.kernel_args}".strip(),
            },
            "drives": [],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": memory_mib},
            "network-interfaces": [interface],
            "logger": {"log_path": str(log), "level": "Warning"},
        }

    def command(
        self,
        image: GuestImage,
        *,
        tap: str,
        mac: str,
        boot_args: str,
        memory_mib: int,
        workdir: Path,
    ) -> list[str]:
        if not self.supports(image):
            raise GuestUnavailable(
                "Firecracker boots only an uncompressed ELF vmlinux, not "
                f"{self.kernel or image.kernel}; pass FirecrackerVmm(kernel=...) "
                "(e.g. made with linux's scripts/extract-vmlinux)"
            )
        log = workdir / "firecracker.log"
        log.touch()
        config = self.config(
            image, tap=tap, mac=mac, boot_args=boot_args, memory_mib=memory_mib, log=log
        )
        path = workdir / "vm-config.json"
        path.write_text(json.dumps(config, indent=2))
        return [self.binary, "--no-api", "--config-file", str(path)]


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, 0xAE00) == 12  # KVM_GET_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def qemu_available() -> bool:
    """Whether ``qemu-system-x86_64`` is on PATH."""
    return QemuVmm().usable()


def select_vmm(image: GuestImage | None = None) -> Vmm:
    """Firecracker when it is installed, KVM works (and it can boot ``image``), else QEMU."""
    firecracker = FirecrackerVmm()
    if firecracker.usable() and (image is None or firecracker.supports(image)):
        return firecracker
    qemu = QemuVmm()
    if qemu.usable():
        return qemu
    raise GuestUnavailable(
        f"no VMM: neither firecracker (with /dev/kvm) nor {QEMU_BINARY} is available; "
        "install QEMU with: apt-get install --no-install-recommends qemu-system-x86"
    )


# --- running guest -----------------------------------------------------------------------------


class _Console:
    """Collects the VMM's stdout (the guest console) in a thread; optional full log file."""

    def __init__(self, stream: IO[bytes], log: IO[bytes] | None) -> None:
        self.text = ""
        self.eof = False
        self.cond = threading.Condition()
        self._stream = stream
        self._log = log
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self._stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if self._log is not None and chunk:
                try:
                    self._log.write(chunk)
                    self._log.flush()
                except (OSError, ValueError):  # log closed or full: keep collecting the console
                    self._log = None
            with self.cond:
                if chunk:
                    self.text += decoder.decode(chunk).replace("\r", "")
                else:
                    self.text += decoder.decode(b"", final=True)
                    self.eof = True
                self.cond.notify_all()
            if not chunk:
                return

    def wait_for(
        self, pattern: re.Pattern[str], start: int, deadline: float
    ) -> re.Match[str] | None:
        """The first match of ``pattern`` at or after ``start``; None on EOF or deadline."""
        with self.cond:
            while True:
                match = pattern.search(self.text, start)
                if match or self.eof:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def tail(self, lines: int = 40) -> str:
        with self.cond:
            return "\n".join(self.text.splitlines()[-lines:])

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Guest:
    """A running lab guest. Use as a context manager, or call :meth:`stop`."""

    def __init__(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        console: _Console,
        workdir: Path,
        log: IO[bytes] | None,
    ) -> None:
        self.name = name
        #: Seconds from VMM start to the guest's ready marker.
        self.boot_seconds = 0.0
        #: What the guest's ipconfig made of ``ip=``: "ok", "failed" or "skipped".
        self.net_status = "unknown"
        self._process = process
        self._console = console
        self._workdir = workdir
        self._log = log
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def console_text(self) -> str:
        """Everything the guest printed so far (carriage returns removed)."""
        with self._console.cond:
            return self._console.text

    def run(self, command: str, timeout: float = 20.0) -> tuple[int, str]:
        """Run a shell command line in the guest; return its exit status and output.

        Stdout and stderr are merged; stdin is /dev/null. Background jobs (``cmd &``) keep
        running after the call returns. Raises :class:`GuestError` if no answer comes within
        ``timeout`` seconds (the guest is then still busy with the command).
        """
        encoded = base64.b64encode(command.encode()).decode()
        with self._lock:
            self._seq += 1
            seq = self._seq
            line = f"{RUN_PREFIX} {seq} {encoded}\n"
            if len(line) > MAX_COMMAND_LINE:
                raise ValueError(f"command too long for the guest console ({len(command)} bytes)")
            if self._process.poll() is not None:
                raise GuestError(f"guest {self.name} is not running", self._console.tail())
            with self._console.cond:
                start = len(self._console.text)
            stdin = self._process.stdin
            assert stdin is not None
            try:
                stdin.write(line.encode())
                stdin.flush()
            except OSError as exc:
                raise GuestError(f"guest {self.name}: console write failed: {exc}") from exc
            deadline = time.monotonic() + timeout
            begin = re.escape(BEGIN_MARKER.format(seq=seq)) + r"\n"
            end = re.escape(END_MARKER.format(seq=seq)) + r"(\d+)@@"
            framed = re.compile(f"{begin}(.*?){end}", re.DOTALL)
            match = self._console.wait_for(framed, start, deadline)
            if match is None:
                state = "exited" if self._process.poll() is not None else "timed out"
                raise GuestError(
                    f"guest {self.name}: command {command!r} {state} after {timeout:g}s",
                    self._console.tail(),
                )
            return int(match.group(2)), match.group(1)

    def stop(self) -> None:
        """Kill the VMM and reap it. Idempotent."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        self._process.wait()
        _LIVE.discard(self)
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        self._console.join(5.0)
        if self._process.stdout is not None:
            self._process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Guest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_LIVE: set[Guest] = set()


@atexit.register
def _stop_leftovers() -> None:
    for guest in list(_LIVE):
        guest.stop()


def start_guest(
    image: GuestImage,
    *,
    netns: str,
    tap: str,
    mac: str,
    boot_args: str,
    name: str = "guest",
    memory_mib: int = 128,
    log_path: Path | None = None,
    ready_timeout: float = 90.0,
    vmm: Vmm | None = None,
) -> Guest:
    """Boot ``image`` in network namespace ``netns`` (a name, or a path) on the existing tap
    ``tap``.

    ``boot_args`` is the caller's kernel command line (e.g. an ``ip=`` argument); the VMM's
    console/timing arguments are appended. Returns once the guest printed its ready marker;
    raises :class:`GuestError` (with the console tail) on early exit or after
    ``ready_timeout`` seconds. The full console goes to ``log_path`` if given.
    """
    vmm = vmm or select_vmm(image)
    # a namespace by name (under /var/run/netns) or by path (e.g. /proc/PID/ns/net)
    enter = (
        ["nsenter", f"--net={netns}"] if netns.startswith("/") else ["ip", "netns", "exec", netns]
    )
    # A VMM running as root would silently create a missing tap, detached from everything.
    probe = subprocess.run(
        [*enter, "ip", "-o", "link", "show", "dev", tap], capture_output=True, text=True
    )
    if probe.returncode != 0:
        raise GuestError(f"tap {tap} not found in netns {netns}: {probe.stderr.strip()}")
    workdir = Path(tempfile.mkdtemp(prefix=f"fireroute-{name}-"))
    try:
        argv = vmm.command(
            image, tap=tap, mac=mac, boot_args=boot_args, memory_mib=memory_mib, workdir=workdir
        )
        log = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            [*enter, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except BaseException:
        if log is not None:
            log.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    assert process.stdout is not None
    guest = Guest(name, process, _Console(process.stdout, log), workdir, log)
    _LIVE.add(guest)
    try:
        match = guest._console.wait_for(_READY_RE, 0, started + ready_timeout)
        if match is None:
            if guest._console.eof:
                why = f"exited with status {process.wait(timeout=10)}"
            else:
                why = f"not ready after {ready_timeout:g}s"
            raise GuestError(
                f"guest {name} ({vmm.name} in netns {netns}) {why}", guest._console.tail()
            )
    except BaseException:
        guest.stop()
        raise
    guest.boot_seconds = time.monotonic() - started
    guest.net_status = match.group(1)
    return guest
