"""A throwaway network: a "host" namespace where fireroute runs, and an "internet" namespace
behind a veth uplink that has no route back to the guests' pool (replies come only via NAT).

Used by the demo, the end-to-end tests and the benchmarks; it never touches the namespace it
is called from, and ``close`` (also on Ctrl-C, via ``with``) deletes both namespaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import fireroute
from fireroute.kernel import forwarding

HOST_UPLINK_IP = "203.0.113.2"
INTERNET_IP = "203.0.113.1"
HTTP_PORT = 80


def _exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C (so ``with Sandbox()`` still deletes its namespaces)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(
        signal.SIGTERM
    ) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class Sandbox:
    prefix: str = "frlab"
    host: str = ""
    internet: str = ""
    state: Path = field(default_factory=lambda: Path("/nonexistent"))
    _server: subprocess.Popen | None = None

    def __enter__(self) -> Sandbox:
        _exit_cleanly_on_sigterm()
        tag = secrets.token_hex(3)
        self.host = f"{self.prefix}-{tag}"
        self.internet = f"{self.prefix}-{tag}-i"
        try:
            _ip("netns", "add", self.host)
            _ip("netns", "add", self.internet)
            _ip(
                "link",
                "add",
                "up0",
                "netns",
                self.host,
                "type",
                "veth",
                "peer",
                "name",
                "down0",
                "netns",
                self.internet,
            )
            for ns, dev, addr in (
                (self.host, "up0", HOST_UPLINK_IP),
                (self.internet, "down0", INTERNET_IP),
            ):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.host, "route", "add", "default", "via", INTERNET_IP)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exec(
        self,
        ns: str,
        *argv: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            check=check,
            env=env,
            timeout=timeout,
        )

    def fireroute_argv(self, *args: str) -> list[str]:
        # nsenter switches only the network namespace: namespaces that fireroute creates
        # (clone mode) must outlive the command, which "ip netns exec" (a private mount
        # namespace) would prevent
        return [
            "nsenter",
            f"--net=/var/run/netns/{self.host}",
            sys.executable,
            "-m",
            "fireroute",
            *args,
        ]

    def fireroute(
        self, *args: str, check: bool = True, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        # this very fireroute, however it was started (the installed launcher runs python -S,
        # so "python -m fireroute" finds the package only through PYTHONPATH)
        here = os.path.dirname(os.path.dirname(os.path.abspath(fireroute.__file__)))
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        env = {
            **os.environ,
            "FIREROUTE_STATE": str(self.state),
            "PYTHONPATH": path,
            **(extra_env or {}),
        }
        return subprocess.run(
            self.fireroute_argv(*args), capture_output=True, text=True, check=check, env=env
        )

    def start_http(self) -> None:
        """A tiny HTTP server in the internet namespace that answers with the client's address
        (so a test can see whether NAT happened)."""
        code = (
            "import http.server as h\n"
            "class H(h.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        body = ('hello-from-internet client=' + self.client_address[0] + '\\n')"
            ".encode()\n"
            "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
            "        self.end_headers(); self.wfile.write(body)\n"
            "    def log_message(self, *a): pass\n"
            f"h.HTTPServer(('{INTERNET_IP}', {HTTP_PORT}), H).serve_forever()\n"
        )
        self._server = subprocess.Popen(
            ["ip", "netns", "exec", self.internet, sys.executable, "-c", code],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        probe = (
            "import socket, sys, time\n"
            "end = time.monotonic() + float(sys.argv[1])\n"
            "while True:\n"
            "    try:\n"
            f"        socket.create_connection(('{INTERNET_IP}', {HTTP_PORT}), 0.5).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        if time.monotonic() > end: sys.exit(1)\n"
            "        time.sleep(0.05)\n"
        )
        res = self.exec(self.internet, sys.executable, "-c", probe, str(timeout), check=False)
        if res.returncode != 0:
            raise RuntimeError("the sandbox's HTTP server did not start")

    def close(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None
        for ns in (self.host, self.internet):
            if ns:
                # processes left inside (a VMM still booting) would keep taps alive
                pids = _ip("netns", "pids", ns, check=False).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                forwarding.forget_namespace(f"/var/run/netns/{ns}")  # a run that did not end
                _ip("netns", "del", ns, check=False)
