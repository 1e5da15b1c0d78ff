"""POST /vms/{name}/attach: the daemon hands a VM to a Firecracker (the stand-in) whose socket
the client names inside the operator's directory and owns; every other socket is refused."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import Host, needs_root_to
from tests.firecracker.test_fc_verbs import STARTED, boot_source, start
from tests.kernel.test_serve import Daemon

pytestmark = pytest.mark.privileged


def test_attach_through_the_daemon(host: Host, tmp_path: Path, standin_new):
    fc_dir = os.path.dirname(standin_new.socket_path)
    name = os.path.basename(standin_new.socket_path)
    d = Daemon(host, tmp_path, {"firecracker_dir": fc_dir})
    try:
        c = d.client()
        assert c.call("PUT", "/vms/web-1", {})[0] == 200
        boot_source(standin_new)

        def refused(body: dict, want: int, needle: str) -> None:
            status, got = c.call("POST", "/vms/web-1/attach", body)
            assert status == want and needle in got["error"]["message"], (body, got)

        refused({"socket": "../../etc/passwd"}, 403, "not a name in")
        os.symlink(standin_new.socket_path, Path(fc_dir) / "link.sock")
        refused({"socket": "link.sock"}, 403, "not a socket")  # a symlink is not followed
        (Path(fc_dir) / "plain").write_text("")
        refused({"socket": "plain"}, 403, "not a socket")
        refused({"socket": "nope.sock"}, 403, "no socket")
        refused({"socket": name, "mtu": 10}, 400, "--mtu")
        refused({"socket": name, "program": "/bin/sh"}, 400, "unknown attach setting")
        scalar = {"iface_id": 5, "timeout": "x", "mtu": "x", "boot_source": "x", "rx_rate": True}
        for setting in (*scalar, "mmds"):
            for wrong in ([1], {"a": 1}, scalar.get(setting, "x")):
                status, got = c.call("POST", "/vms/web-1/attach", {"socket": name, setting: wrong})
                assert status == 400, (setting, wrong, got)  # a wrong type: 400, never a 500
        assert "eth0" not in standin_new.interfaces  # nothing was sent for any of them
        status, got = c.call("POST", "/vms/web-1/attach", {"socket": name, "boot_source": True})
        assert status == 200, got  # the positive control
        assert standin_new.interfaces["eth0"]["host_dev_name"] == "fr-web-1"
        assert got["boot_args"]["ip"].startswith("ip=172.16.0.2::172.16.0.1")
        start(standin_new)  # a started VMM refuses: its words come back, as 502
        status, got = c.call("POST", "/vms/web-1/attach", {"socket": name})
        assert status == 502 and STARTED in got["error"]["message"], got
    finally:
        d.stop()


def test_attach_is_refused_when_the_operator_set_no_directory(host: Host, tmp_path: Path):
    d = Daemon(host, tmp_path, {})
    try:
        c = d.client()
        assert c.call("PUT", "/vms/web-1", {})[0] == 200
        status, got = c.call("POST", "/vms/web-1/attach", {"socket": "/tmp/x.sock"})
        assert status == 403 and "attaches no Firecracker" in got["error"]["message"], got
    finally:
        d.stop()


@needs_root_to("give a socket to another uid (chown)")
def test_a_socket_of_another_uid_is_refused():
    from fireroute.serve.config import NotAllowed, ServerConfig

    here = Path(os.environ.get("TMPDIR", "/tmp")) / f"frfc-{os.getpid()}"
    here.mkdir()
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(here / "vm.sock"))
        os.chown(here / "vm.sock", 4321, 4321)
        config = ServerConfig(firecracker_dir=str(here))
        with pytest.raises(NotAllowed, match="not uid 1234"):
            config.vmm_socket(1234, "vm.sock")
        for uid in (4321, 0):  # its owner, and root: the socket itself, opened
            fd = config.vmm_socket(uid, "vm.sock")
            assert os.fstat(fd).st_ino == os.stat(here / "vm.sock").st_ino
            os.close(fd)
        s.close()
    finally:
        for f in here.iterdir():
            f.unlink()
        here.rmdir()
