"""The pause image, built offline: no registry is reachable, so the sandbox image containerd
starts for every pod is made here as an OCI image layout (``oci-layout``, ``index.json``,
blobs) in a tar that ``ctr images import`` takes. Its one layer holds Debian's static busybox,
and the entry point is ``sleep``: a sandbox's process only has to hold the pod's namespaces
until containerd kills it (StopPodSandbox sends SIGKILL)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

NAME = "docker.io/fireroute/pause:1"
"""The name the image is imported under (containerd's ``sandbox_image``)."""


def _blob(out: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    return {"digest": digest, "size": len(data)}


def _layer(busybox: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "dev", "proc", "sys", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sleep")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return buf.getvalue()


def build(dest: Path, busybox: str = "/bin/busybox") -> Path:
    """Write the pause image's OCI layout tar to ``dest``."""
    layer = _layer(busybox)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "2147483647"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    with tarfile.open(dest, "w") as out:
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_blob(out, json.dumps(config).encode()),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(out, layer)}
            ],
        }
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **_blob(out, json.dumps(manifest).encode()),
                    "annotations": {
                        "io.containerd.image.name": NAME,
                        "org.opencontainers.image.ref.name": NAME.rsplit(":", 1)[1],
                    },
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dest
