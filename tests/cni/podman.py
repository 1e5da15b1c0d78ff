"""Run podman containers whose network a given CNI conflist sets up, inside a throwaway "host".

``Podman`` is a test harness: given the path of a network namespace that plays the host (for
example a :class:`fireroute.lab.sandbox.Sandbox`'s ``/var/run/netns/<host>``), the directories
holding CNI plugin binaries and a conflist, it runs Debian 12's podman 4.3 (CNI network
backend, crun, vfs storage) so that each container's network is made by that conflist's
plugins, exactly as podman drives a CNI plugin on a real machine (VERSION before each ADD and
DEL, ``CNI_ARGS``, cached results under ``/var/lib/cni/results``).

Isolation, so nothing of the machine's own is touched:

* One long-lived *holder* process per harness: ``unshare --mount --propagation private --pid
  --fork --mount-proc`` entered into the host namespace with ``nsenter --net``. Every podman
  command runs inside it through ``nsenter --target HOLDER --mount --pid --net``, so podman's
  "host" is the throwaway namespace, and conmon and the containers die with the holder (pid 1
  of its pid namespace; it exits when the harness closes its stdin, or when the test process
  dies).
* In the holder's private mount namespace ``/run`` (podman puts container network namespaces
  under ``/run/netns``), ``/var/lib`` (the CNI cache ``/var/lib/cni`` is a bind of a harness
  directory), ``/dev/shm`` (libpod's lock segment) and ``/var/tmp`` are fresh tmpfs, and a
  read-only empty tmpfs hides ``/sys/fs/cgroup/unified``: crun 1.8 refuses a hybrid cgroup
  layout even with cgroups disabled.
* All of podman's state (storage, ``containers.conf``, ``storage.conf``, network config dir,
  CNI cache, temp files) lives in one temp directory that ``close`` removes; podman reads the
  configuration through ``CONTAINERS_CONF`` / ``CONTAINERS_STORAGE_CONF`` (podman hands the
  first, and the storage and network flags, to conmon, so the ``podman container cleanup`` it
  runs when a container exits, and with it the plugins' DEL, sees the same setup).

The image is a local busybox-static root file system (``podman import``; no registry is
reachable, every run uses ``--pull=never``). Root is required.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BUSYBOX", "DEFAULT_PLUGIN_DIRS", "IMAGE", "Podman", "PodmanError"]

BUSYBOX = "/bin/busybox"
"""A statically linked busybox (Debian's ``busybox-static``): the whole container image."""

IMAGE = "localhost/fireroute-busybox:latest"
"""The name the harness imports its busybox image under."""

DEFAULT_PLUGIN_DIRS = ("/usr/lib/cni",)
"""Where Debian's ``containernetworking-plugins`` installs the reference CNI plugins."""

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Paths the holder's mount namespace replaces with tmpfs: the harness's own directories must
# not live below them (they would be hidden from podman).
_MASKED = ("/run", "/var/run", "/var/lib", "/dev/shm", "/var/tmp")

_SETUP = r"""
set -eu
# the copies of the machine's netns mounts would otherwise keep those namespaces alive for
# as long as this mount namespace lives (the namespace is private: nothing propagates out)
for m in $(awk '$5 == "/run/netns" || index($5, "/run/netns/") == 1 {print $5}' \
        /proc/self/mountinfo | sort -ru); do
    umount -l "$m" 2>/dev/null || true
done
mount -t tmpfs -o mode=0755,nosuid,nodev fireroute-run /run
mkdir /run/netns
mount -t tmpfs -o mode=0755,nosuid,nodev fireroute-varlib /var/lib
mkdir -p /var/lib/cni
mount --bind "$FR_CNI_DIR" /var/lib/cni
mount -t tmpfs -o mode=1777,nosuid,nodev fireroute-shm /dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev fireroute-vartmp /var/tmp
if [ -d /sys/fs/cgroup/unified ]; then
    mount -t tmpfs -o ro,mode=0755,nosuid,nodev,noexec fireroute-nounified /sys/fs/cgroup/unified
fi
"""


class PodmanError(RuntimeError):
    """The harness could not be set up, or a podman command it needed failed."""


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def _ulimits() -> list[str]:
    """Limits that crun can set without CAP_SYS_RESOURCE: never above the current hard limit
    (podman's rootful default, 1048576, fails with EPERM where root lacks that capability)."""

    def capped(limit: int, want: int) -> int:
        hard = resource.getrlimit(limit)[1]
        return want if hard == resource.RLIM_INFINITY else min(hard, want)

    nofile = capped(resource.RLIMIT_NOFILE, 1048576)
    nproc = capped(resource.RLIMIT_NPROC, 4096)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


def _build_rootfs_tar(dest: Path, busybox: str) -> None:
    """A tarball of a root file system holding only busybox and its applet links."""
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    root = dest.parent / "rootfs"
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "run", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            (root / "bin" / applet).symlink_to("busybox")
    (root / "sbin").symlink_to("bin")
    (root / "usr").mkdir()
    (root / "usr" / "bin").symlink_to("../bin")
    (root / "usr" / "sbin").symlink_to("../bin")
    (root / "tmp").chmod(0o1777)
    with tarfile.open(dest, "w") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    shutil.rmtree(root)


class Podman:
    """A podman whose containers get their network from CNI conflists of the caller's choice.

    Use as a context manager (``close`` removes every container, the holder namespaces and
    all state)::

        with Sandbox() as sb, Podman(f"/var/run/netns/{sb.host}", conflist) as pm:
            pm.run("ip", "-4", "addr", "show", "eth0")

    ``conflist`` is a CNI network configuration list (a dict with ``name``, ``cniVersion``,
    ``plugins``); its ``name`` is the network containers join unless told otherwise. More
    networks can be added with :meth:`add_network`. ``plugin_dirs`` are searched in order for
    the plugin binaries (``type`` of each plugin). ``dns`` is given to containers as
    ``--dns``; by default they get no ``/etc/resolv.conf`` at all (``--dns=none``), so nothing
    in a container can send a DNS query to the machine's resolver.
    """

    def __init__(
        self,
        netns: str | os.PathLike[str],
        conflist: dict[str, Any],
        plugin_dirs: Sequence[str | os.PathLike[str]] = DEFAULT_PLUGIN_DIRS,
        *,
        dns: Sequence[str] = (),
        busybox: str = BUSYBOX,
        timeout: float = 120.0,
    ) -> None:
        self.netns = Path(netns)
        self.plugin_dirs = [str(Path(d).resolve()) for d in plugin_dirs]
        self.dns = list(dns)
        self.busybox = busybox
        self.timeout = timeout
        self.network = str(conflist.get("name") or "")
        if not self.network:
            raise ValueError("the conflist needs a name")
        self._first_conflist = conflist
        self.dir = Path("/nonexistent")
        self._holder: subprocess.Popen[bytes] | None = None
        self._holder_pid = 0
        self._env: dict[str, str] = {}

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Podman:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Make the temp directory, the holder namespaces and the image."""
        if os.geteuid() != 0:
            raise PodmanError("the podman harness needs root")
        if not self.netns.exists():
            raise PodmanError(f"no network namespace at {self.netns}")
        if shutil.which("podman") is None:
            raise PodmanError("podman is not installed (apt-get install podman)")
        self.dir = Path(tempfile.mkdtemp(prefix="fireroute-podman-"))
        try:
            real = os.path.realpath(self.dir)
            if any(real == m or real.startswith(m + "/") for m in _MASKED):
                raise PodmanError(f"the temp dir {real} is under a path the harness masks")
            self._write_config()
            self.add_network(self._first_conflist)
            self._start_holder()
            self._import_image()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove every container (so plugins get their DEL), then the holder (which takes
        conmon, containers and every mount with it), then all state. Idempotent."""
        if self._holder is not None:
            if self._holder.poll() is None and self._holder_pid:
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    self.podman("rm", "--all", "--force", "--time", "0", timeout=60)
            if self._holder.stdin is not None:
                with contextlib.suppress(OSError):
                    self._holder.stdin.close()  # pid 1 of the namespace reads to EOF, then exits
            try:
                self._holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._holder.kill()  # --kill-child takes pid 1 (and so the namespace) along
                self._holder.wait()
            self._holder = None
            self._holder_pid = 0
        if self.dir != Path("/nonexistent") and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = Path("/nonexistent")

    @property
    def holder_pid(self) -> int:
        """The holder's pid (pid 1 of the harness's pid namespace, as seen from here); 0 when
        the harness is not open."""
        return self._holder_pid

    # -- containers -------------------------------------------------------------------------

    def podman(
        self, *args: str, check: bool = False, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS`` in the harness (global storage flags added)."""
        return self._in_holder(
            [
                "podman",
                "--root",
                str(self.dir / "storage"),
                "--runroot",
                str(self.dir / "runroot"),
                "--storage-driver",
                "vfs",
                *args,
            ],
            check=check,
            timeout=timeout,
        )

    def run(
        self,
        *cmd: str,
        network: str | None = None,
        args: Sequence[str] = (),
        check: bool = False,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm`` of ``cmd`` (a busybox command line) on ``network`` (the
        conflist's by default); ``args`` are extra ``podman run`` options."""
        argv = ["run", "--rm", *self._run_opts(network), *args, IMAGE, *cmd]
        return self.podman(*argv, check=check, timeout=timeout)

    def start(
        self,
        name: str,
        *cmd: str,
        network: str | None = None,
        args: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Start a long-running container ``name`` (``cmd`` defaults to ``sleep 3600``)."""
        argv = ["run", "--detach", "--name", name, *self._run_opts(network), *args, IMAGE]
        return self.podman(*argv, *(cmd or ("sleep", "3600")), check=check)

    def exec(self, name: str, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the running container ``name``."""
        return self.podman("exec", name, *cmd, check=check)

    def rm(self, name: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Stop (at once) and remove container ``name``; its network is torn down (CNI DEL)."""
        return self.podman("rm", "--force", "--time", "0", name, check=check)

    def inspect(self, name: str) -> dict[str, Any]:
        """``podman inspect`` of one container."""
        out = self.podman("container", "inspect", name, check=True).stdout
        return json.loads(out)[0]

    def containers(self) -> list[str]:
        """The names of all containers, running or not."""
        out = self.podman("ps", "--all", "--format", "{{.Names}}", check=True).stdout
        return out.split()

    # -- networks and the host side ---------------------------------------------------------

    def add_network(self, conflist: dict[str, Any]) -> str:
        """Make ``conflist`` available to containers (``network=`` its name)."""
        name = str(conflist.get("name") or "")
        if not name or "/" in name:
            raise ValueError(f"bad conflist name {name!r}")
        path = self.dir / "net.d" / f"{name}.conflist"
        path.write_text(json.dumps(conflist, indent=2) + "\n")
        return name

    @property
    def cni_dir(self) -> Path:
        """What the host side sees as ``/var/lib/cni`` (host-local leases, cached results)."""
        return self.dir / "cni"

    def cached_results(self) -> list[Path]:
        """The CNI result cache entries (``/var/lib/cni/results``); empty once every container
        that joined a network has been removed and DEL ran."""
        results = self.cni_dir / "results"
        return sorted(results.iterdir()) if results.is_dir() else []

    def host(
        self, *argv: str, check: bool = False, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on the host side (the host namespace, the harness's mounts), e.g.
        ``ls /run/netns`` or ``iptables -t nat -S``."""
        return self._in_holder(list(argv), check=check, timeout=timeout)

    # -- internals --------------------------------------------------------------------------

    def _run_opts(self, network: str | None) -> list[str]:
        dns = [f"--dns={d}" for d in self.dns] or ["--dns=none"]
        return ["--pull=never", f"--network={network or self.network}", *dns]

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("storage", "runroot", "net.d", "cni", "tmp", "libpod-tmp", "volumes"):
            (d / sub).mkdir(mode=0o700)
        self._env = {
            "PATH": _PATH,
            "HOME": str(d),
            "TMPDIR": str(d / "tmp"),
            "CONTAINERS_CONF": str(d / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(d / "storage.conf"),
            "FR_CNI_DIR": str(d / "cni"),
        }
        (d / "containers.conf").write_text(
            "[containers]\n"
            f"default_ulimits = {_toml_list(_ulimits())}\n"
            'cgroups = "disabled"\n'
            'log_driver = "k8s-file"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f"cni_plugin_dirs = {_toml_list(self.plugin_dirs)}\n"
            f"network_config_dir = {_toml_str(str(d / 'net.d'))}\n"
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            'runtime = "crun"\n'
            f"tmp_dir = {_toml_str(str(d / 'libpod-tmp'))}\n"
            f"volume_path = {_toml_str(str(d / 'volumes'))}\n"
            f"image_copy_tmp_dir = {_toml_str(str(d / 'tmp'))}\n"
        )
        (d / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f"graphroot = {_toml_str(str(d / 'storage'))}\n"
            f"runroot = {_toml_str(str(d / 'runroot'))}\n"
        )

    def _start_holder(self) -> None:
        with open(self.dir / "holder.log", "wb") as log:  # the holder keeps its own copy
            self._holder = subprocess.Popen(
                [
                    "nsenter",
                    f"--net={self.netns}",
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    "cat",  # pid 1 of the new pid namespace, until its stdin closes
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._holder_pid = self._find_holder_child(self._holder.pid)
        own = os.readlink("/proc/self/ns/mnt")
        if os.readlink(f"/proc/{self._holder_pid}/ns/mnt") == own:
            raise PodmanError("the holder is not in a mount namespace of its own")
        self._in_holder(["sh", "-c", _SETUP], check=True)

    def _find_holder_child(self, unshare_pid: int, timeout: float = 10.0) -> int:
        """The pid (in our namespace) of unshare's child, once it has exec'd ``cat`` (so
        ``--mount-proc`` is done)."""
        end = time.monotonic() + timeout
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children")
        while time.monotonic() < end:
            assert self._holder is not None
            if self._holder.poll() is not None:
                err = (self.dir / "holder.log").read_text(errors="replace")
                raise PodmanError(f"the namespace holder exited: {err.strip()}")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "cat":
                        return int(pid)
            time.sleep(0.01)
        raise PodmanError("the namespace holder did not start")

    def _in_holder(
        self,
        argv: list[str],
        *,
        check: bool = False,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        if not self._holder_pid:
            raise PodmanError("the harness is not open")
        # --pid too: podman (and the conmon it forks) must live and die in the holder's pid
        # namespace, and /proc there (--mount-proc) shows only that namespace's processes
        enter = ["nsenter", f"--target={self._holder_pid}", "--mount", "--net", "--pid"]
        res = subprocess.run(
            [*enter, "--", *argv],
            capture_output=True,
            text=True,
            env=self._env,
            stdin=subprocess.DEVNULL,
            timeout=timeout or self.timeout,
        )
        if check and res.returncode != 0:
            raise PodmanError(
                f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}"
                f" {res.stdout.strip()}"
            )
        return res

    def _import_image(self) -> None:
        tar = self.dir / "tmp" / "rootfs.tar"
        _build_rootfs_tar(tar, self.busybox)
        self.podman("import", "--quiet", str(tar), IMAGE, check=True)
        tar.unlink()
