"""Debian 12's containerd (1.6, CRI plugin built in), started with a private configuration and
driven over its CRI socket as kubelet drives it, inside a throwaway "host".

``Containerd`` is a test harness: given the path of a network namespace that plays the node
(a :class:`fireroute.lab.sandbox.Sandbox`'s ``/var/run/netns/<host>``), a CNI conflist and the
plugin programs it names, it runs containerd so that every pod sandbox's network is made by
that conflist, through containerd's own libcni, exactly as on a Kubernetes node.

Isolation, so nothing of the machine's own is touched:

* One *holder* process (``unshare --mount --propagation private --pid --fork --mount-proc``,
  entered into the node namespace with ``nsenter --net``): containerd, its shims, runc and
  every pod's process run inside it, so containerd's "host" network is the throwaway node
  namespace (fireroute's host side is made there), its mounts (``/run``, where pod network
  namespaces are pinned under ``/run/netns``; ``/var/lib``, where libcni caches results) are
  fresh tmpfs of that mount namespace (the same setup as tests/cni/podman.py's holder), and
  everything dies with the holder.
* containerd's root, state, gRPC socket, configuration, CNI configuration and plugin
  directories live in one temp directory that ``close`` removes; the plugins directory holds
  a wrapper per plugin that logs each call's ``CNI_COMMAND`` (``verbs``) and runs the plugin.
* Every pod's cgroups are made below a cgroup parent named after the temp directory
  (``cgroup``), and ``close`` removes what is left of them.
* No registry is reachable: the sandbox image is built here (tests/cri/image.py) and imported
  with ``ctr images import``; containerd's ``sandbox_image`` names it.

Root is required.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.cni.podman import _SETUP  # the holder's mounts: fresh /run, /var/lib, ...
from tests.cri import image

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HOLDER = "unshare --mount --propagation private --pid --fork --mount-proc --kill-child cat"
"""the holder: pid 1 of a new pid namespace (``cat``, until its stdin closes) in a private
mount namespace"""
_WRAPPER = """#!/bin/sh
echo "{name} $CNI_COMMAND ${{CNI_CONTAINERID:-}} ${{CNI_NETNS:-}}" >> {log}
exec {program}
"""
_DISABLED = [  # plugins that would reach outside the temp dir, or that are of no use here
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
]


class ContainerdError(RuntimeError):
    """The harness could not be set up, or a command it needed failed."""


def _config(d: Path) -> str:
    q = json.dumps  # a JSON string is a valid TOML basic string
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = {q(str(d / "root"))}
state = {q(str(d / "state"))}
disabled_plugins = {json.dumps(_DISABLED)}
[grpc]
  address = {q(str(d / "containerd.sock"))}
[ttrpc]
  address = {q(str(d / "containerd.sock.ttrpc"))}
[metrics]
  address = ""
{cri}]
  sandbox_image = {q(image.NAME)}
  disable_apparmor = true
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
{cri}.containerd]
  snapshotter = "native"
  default_runtime_name = "runc"
{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri}.cni]
  bin_dir = {q(str(d / "bin"))}
  conf_dir = {q(str(d / "net.d"))}
  max_conf_num = 1
"""


def _child(proc: subprocess.Popen[bytes], comm: str) -> int:
    """The pid of ``proc``'s child named ``comm`` (nsenter forks to enter a pid namespace;
    unshare forks with ``--fork``), once it has exec'd."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    end = time.monotonic() + 10
    while time.monotonic() < end and proc.poll() is None:
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    return int(pid)
        time.sleep(0.01)
    raise ContainerdError(f"{comm} did not start under {proc.args[0]}")


def _remove_cgroups(parent: str, timeout: float = 5.0) -> None:
    """Remove the cgroups below ``parent`` in every cgroup hierarchy, deepest first, once
    they are empty (the holder's last processes may take a moment to be reaped)."""
    tops = [h / parent.lstrip("/") for h in Path("/sys/fs/cgroup").iterdir()]
    end = time.monotonic() + timeout
    while True:
        tops = [top for top in tops if top.is_dir()]
        for top in tops:
            for d, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
        if not any(top.is_dir() for top in tops) or time.monotonic() > end:
            return
        time.sleep(0.1)


class Containerd:
    """containerd whose pods get their network from ``conflist`` (its plugins' ``type``s
    mapped to programs by ``plugins``). Use as a context manager::

        with Sandbox() as sb, Containerd(f"/var/run/netns/{sb.host}", conf, plugins) as ct:
            pod = ct.run_pod("web", ports=[(8080, 80)])
    """

    def __init__(
        self,
        netns: str | os.PathLike[str],
        conflist: dict[str, Any],
        plugins: dict[str, str | os.PathLike[str]],
        *,
        timeout: float = 120.0,
    ) -> None:
        self.netns = Path(netns)
        self.conflist = conflist
        self.plugins = {name: Path(p) for name, p in plugins.items()}
        self.timeout = timeout
        self.dir = Path("/nonexistent")
        self._holder: subprocess.Popen[bytes] | None = None
        self._holder_pid = 0
        self._daemon: subprocess.Popen[bytes] | None = None
        self.pid = 0
        """containerd's pid (0 while it is stopped)"""
        self._env: dict[str, str] = {}
        self._channel: Any = None
        self.runtime: Any = None  # the CRI RuntimeService stub
        self.api: Any = None  # the CRI v1 messages (cri_api.v1.api_pb2)

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Containerd:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if os.geteuid() != 0:
            raise ContainerdError("the containerd harness needs root")
        for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2"):
            if shutil.which(tool) is None:
                raise ContainerdError(f"{tool} is not installed (scripts/install.sh --test)")
        self.dir = Path(tempfile.mkdtemp(prefix="fireroute-cri-"))
        try:
            self._write_files()
            self._start_holder()
            self.start()
            image.build(self.dir / "pause.tar")
            self.ctr("images", "import", "--snapshotter", "native", str(self.dir / "pause.tar"))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove every pod (so the plugins get their DEL), stop containerd, end the holder
        (which takes the shims, the pods and every mount with it), remove all state."""
        if self._daemon is not None and self._daemon.poll() is None and self.runtime:
            with contextlib.suppress(Exception):
                for pod in self.pods():
                    with contextlib.suppress(Exception):
                        self.remove_pod(pod)
        self.stop()
        if self._holder is not None:
            if self._holder.stdin is not None:
                with contextlib.suppress(OSError):
                    self._holder.stdin.close()  # pid 1 of the namespace reads to EOF, then exits
            try:
                self._holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait()
            self._holder, self._holder_pid = None, 0
        if self.dir != Path("/nonexistent"):
            _remove_cgroups(self.cgroup)
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = Path("/nonexistent")

    def start(self) -> None:
        """Start containerd and wait until its CRI says the network is ready."""
        log = open(self.dir / "containerd.log", "ab")  # noqa: SIM115 (the daemon keeps it)
        with log:
            self._daemon = subprocess.Popen(
                [*self._enter(), "containerd", "--config", str(self.dir / "config.toml")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env,
            )
        self.pid = _child(self._daemon, "containerd")
        self._connect()
        end = time.monotonic() + self.timeout
        while True:
            try:
                conds = self.runtime.Status(self.api.StatusRequest(), timeout=5).status.conditions
                if conds and all(c.status for c in conds):
                    return
            except Exception as exc:  # noqa: BLE001 (the socket is not there yet)
                if time.monotonic() > end or self._daemon.poll() is not None:
                    msg = f"containerd did not start: {exc}\n{self.log()}"
                    raise ContainerdError(msg) from None
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop containerd (SIGTERM, as a service manager does, to containerd itself: nsenter
        does not pass signals on) and wait until it is gone; pods and shims keep running."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._daemon is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self._daemon.wait(timeout=30)  # nsenter ends when containerd has
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self._daemon.wait()
            self._daemon, self.pid = None, 0

    def log(self) -> str:
        return (self.dir / "containerd.log").read_text(errors="replace")[-4000:]

    # -- pods (the CRI calls kubelet makes) ---------------------------------------------------

    def run_pod(self, name: str, ports: Sequence[tuple[int, int]] = ()) -> str:
        """RunPodSandbox of pod ``name`` with (hostPort, containerPort) TCP mappings: its id."""
        api = self.api
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
            hostname=name,
            log_directory=str(self.dir / "logs" / name),
            port_mappings=[
                api.PortMapping(protocol=api.TCP, host_port=h, container_port=c) for h, c in ports
            ],
            linux=api.LinuxPodSandboxConfig(cgroup_parent=self.cgroup),
        )
        req = api.RunPodSandboxRequest(config=config)
        return self.runtime.RunPodSandbox(req, timeout=self.timeout).pod_sandbox_id

    def status(self, pod: str) -> Any:
        """PodSandboxStatus (verbose): ``.status`` and ``.info``."""
        req = self.api.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)
        return self.runtime.PodSandboxStatus(req, timeout=self.timeout)

    def stop_pod(self, pod: str) -> None:
        req = self.api.StopPodSandboxRequest(pod_sandbox_id=pod)
        self.runtime.StopPodSandbox(req, timeout=self.timeout)

    def remove_pod(self, pod: str) -> None:
        """StopPodSandbox then RemovePodSandbox, as kubelet does."""
        self.stop_pod(pod)
        req = self.api.RemovePodSandboxRequest(pod_sandbox_id=pod)
        self.runtime.RemovePodSandbox(req, timeout=self.timeout)

    def pods(self) -> list[str]:
        out = self.runtime.ListPodSandbox(self.api.ListPodSandboxRequest(), timeout=self.timeout)
        return [p.id for p in out.items]

    def netns_path(self, pod: str) -> str:
        """The pod's network namespace as containerd pinned it (a path in the holder's
        mounts)."""
        spec = json.loads(self.status(pod).info["info"])["runtimeSpec"]
        (ns,) = [n for n in spec["linux"]["namespaces"] if n["type"] == "network"]
        return str(ns["path"])

    def netns_of(self, pod: str) -> str:
        """The pod's network namespace as a path this process can open (a process in it)."""
        inode = self.host("stat", "-L", "-c", "%i", self.netns_path(pod)).stdout.strip()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]":
                    return f"/proc/{pid}/ns/net"
        raise ContainerdError(f"no process in pod {pod}'s namespace")

    def verbs(self, plugin: str) -> list[tuple[str, str, str]]:
        """Every call containerd made of ``plugin``: (CNI_COMMAND, CNI_CONTAINERID,
        CNI_NETNS), in order."""
        log = self.dir / "verbs.log"
        lines = log.read_text().splitlines() if log.exists() else []
        calls = [line.split(" ") for line in lines]
        return [(c[1], c[2], c[3]) for c in calls if c[0] == plugin]

    # -- the node side -----------------------------------------------------------------------

    def host(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the holder (the node namespace, containerd's mounts)."""
        res = subprocess.run(
            [*self._enter(), *argv],
            capture_output=True,
            text=True,
            env=self._env,
            stdin=subprocess.DEVNULL,
            timeout=self.timeout,
        )
        if check and res.returncode != 0:
            raise ContainerdError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
        return res

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        sock = str(self.dir / "containerd.sock")
        return self.host("ctr", "--address", sock, "--namespace", "k8s.io", *args)

    @property
    def cgroup(self) -> str:
        """The pods' cgroup parent (runc makes each pod's cgroups below it, in every
        hierarchy; ``close`` removes what is left of them)."""
        return f"/{self.dir.name}"

    @property
    def cached_results(self) -> list[Path]:
        """libcni's result cache (``/var/lib/cni/results`` in the holder)."""
        d = self.dir / "cni" / "results"
        return sorted(d.iterdir()) if d.is_dir() else []

    # -- internals ----------------------------------------------------------------------------

    def _enter(self) -> list[str]:
        if not self._holder_pid:
            raise ContainerdError("the harness is not open")
        return ["nsenter", f"--target={self._holder_pid}", "--mount", "--net", "--pid", "--"]

    def _write_files(self) -> None:
        d = self.dir
        for sub in ("root", "state", "bin", "net.d", "cni", "logs"):
            (d / sub).mkdir(mode=0o700)
        self._env = {"PATH": _PATH, "HOME": str(d), "FR_CNI_DIR": str(d / "cni")}
        (d / "config.toml").write_text(_config(d))
        (d / "net.d" / "10-test.conflist").write_text(json.dumps(self.conflist, indent=2))
        for name, program in self.plugins.items():
            wrapper = d / "bin" / name
            wrapper.write_text(_WRAPPER.format(name=name, log=d / "verbs.log", program=program))
            wrapper.chmod(0o755)

    def _start_holder(self) -> None:
        self._holder = subprocess.Popen(
            ["nsenter", f"--net={self.netns}", *_HOLDER.split()],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self._holder_pid = _child(self._holder, "cat")  # nsenter has exec'd unshare
        self.host("sh", "-c", _SETUP)

    def _connect(self) -> None:
        import grpc
        from cri_api.v1 import api_pb2, api_pb2_grpc

        self._channel = grpc.insecure_channel(f"unix://{self.dir / 'containerd.sock'}")
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.api = api_pb2
