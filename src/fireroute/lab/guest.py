"""Build and cache a tiny bootable guest: Debian's cloud kernel plus a busybox initramfs.

The guest exists to prove that packets flow through a tap that fireroute configured. Its
``/init`` applies the kernel's ``ip=`` argument with klibc's ``ipconfig`` (the parser Debian's
initramfs-tools uses; Debian's kernel has no ``CONFIG_IP_PNP`` and ignores ``ip=`` itself), so
a wrongly rendered boot argument makes the guest's network checks fail. It then runs a small
command agent on the serial console (see :mod:`fireroute.lab.vmm` for the host side).

IPv6 is on in the guest's kernel. ``fireroute.v6=slaac`` (the default: the kernel's own
settings) lets the guest take an address and its default route from router advertisements;
``fireroute.v6=script`` makes it ignore them, so that only the commands sent over the console
(fireroute's guest script) configure it (:func:`v6_boot_arg`).

Everything comes from Debian packages fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into the cache; nothing is installed on the host.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GuestImage",
    "GuestUnavailable",
    "default_cache_dir",
    "ensure_guest_image",
    "v6_boot_arg",
]

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
KLIBC_PACKAGE = "klibc-utils"
#: Modules the guest needs (their dependencies are found from the modules' own metadata).
GUEST_MODULES = ("virtio_mmio", "virtio_net")
#: Bump when the image layout changes in a way the init script hash does not capture.
BUILDER_VERSION = 1
#: How long a package-version resolution is trusted before apt is asked again.
RESOLVE_TTL_SECONDS = 24 * 3600

# Console protocol shared with fireroute.lab.vmm. Markers never appear in what the host
# sends (commands travel base64-encoded), so an echoed command cannot be mistaken for output.
READY_MARKER = "@@FR:READY"  # "@@FR:READY net=<ok|failed|skipped>@@"
RUN_PREFIX = "@@FR:RUN"  # host -> guest: "@@FR:RUN <seq> <base64 command>"
BEGIN_MARKER = "@@FR:BEGIN:{seq}@@"
END_MARKER = "@@FR:END:{seq}:"  # followed by "<exit status>@@"

INIT_SCRIPT = r"""#!/bin/sh
# fireroute lab guest: PID 1 of the initramfs.
export PATH=/bin
say() { echo "fireroute-guest: $*"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

# virtio is modular in Debian's kernel and there is no modules.dep: load in dependency order.
while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$mod.ko" || say "insmod $mod failed"
done < /etc/fireroute-modules
ip link set lo up

IP=
V6=slaac
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ip=*) IP="${arg#ip=}" ;;
        fireroute.v6=*) V6="${arg#fireroute.v6=}" ;;
    esac
done

# IPv6 before any link comes up. "slaac" (the kernel's defaults): addresses and the default
# route from router advertisements. "script": none from advertisements, only what a command
# sent over the console (fireroute's guest script) configures.
case "$V6" in
    slaac) RA=1 ;;
    script) RA=0 ;;
    *) RA=1; say "fireroute.v6=$V6 unknown (script or slaac): keeping the kernel's defaults" ;;
esac
for conf in /proc/sys/net/ipv6/conf/default /proc/sys/net/ipv6/conf/eth*; do
    [ -d "$conf" ] || continue
    echo "$RA" > "$conf/accept_ra"
    echo "$RA" > "$conf/autoconf"
done

# Apply ip= exactly as initramfs-tools does for a static spec: hand it to klibc's ipconfig.
case "$IP" in
    ""|off|none) NET=skipped; say "no ip= to apply" ;;
    *:dhcp|*:dhcp:*|dhcp)
        # DHCP right at boot can go unanswered while the host side of the link settles:
        # ask again, as a DHCP client would.
        NET=failed
        for try in 1 2 3; do
            if ipconfig -t 5 -d "$IP"; then NET=ok; break; fi
            say "ipconfig (dhcp) attempt $try failed"
        done ;;
    *) if ipconfig -t 10 -d "$IP"; then NET=ok; else NET=failed; say "ipconfig failed"; fi ;;
esac

: > /etc/resolv.conf
for conf in /run/net-*.conf; do
    [ -f "$conf" ] || continue
    (
        . "$conf"
        for dns in "$IPV4DNS0" "$IPV4DNS1"; do
            case "$dns" in ""|0.0.0.0) ;; *) echo "nameserver $dns" ;; esac
        done
    ) >> /etc/resolv.conf
    # ipconfig reports success even when it could not add the route via the gateway.
    (
        . "$conf"
        case "$IPV4GATEWAY" in ""|0.0.0.0) exit 0 ;; esac
        ip route | grep -q "^default via $IPV4GATEWAY "
    ) || { NET=failed; say "gateway from ip= not applied"; }
done

echo 1 > /proc/sys/kernel/printk
stty -echo 2>/dev/null
echo "@@FR:READY net=$NET@@"

# Command agent: "@@FR:RUN <seq> <base64>" in, begin marker, output, end marker out.
set -f
while :; do
    if ! IFS= read -r line; then sleep 1; continue; fi
    case "$line" in "@@FR:RUN "*) ;; *) continue ;; esac
    set -- $line
    cmd="$(echo "$3" | base64 -d)"
    echo "@@FR:BEGIN:$2@@"
    sh -c "$cmd" < /dev/null 2>&1
    echo "@@FR:END:$2:$?@@"
done
"""


#: How the guest's IPv6 is configured (the ``fireroute.v6=`` kernel argument of the init).
V6_MODES = ("slaac", "script")


def v6_boot_arg(mode: str) -> str:
    """The kernel argument that makes the guest take IPv6 from router advertisements
    (``slaac``) or only from commands sent over the console (``script``)."""
    if mode not in V6_MODES:
        raise ValueError(f"unknown guest IPv6 mode {mode!r}: use one of {', '.join(V6_MODES)}")
    return f"fireroute.v6={mode}"


class GuestUnavailable(Exception):
    """The guest image cannot be built or booted here; the message says what is missing."""


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: a kernel (bzImage) and a gzip'd newc cpio initramfs."""

    kernel: Path
    initramfs: Path


def default_cache_dir() -> Path:
    """``$FIREROUTE_CACHE``, else ``/var/cache/fireroute`` (root) or ``~/.cache/fireroute``."""
    env = os.environ.get("FIREROUTE_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/fireroute")
    return Path.home() / ".cache" / "fireroute"


def ensure_guest_image(
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> GuestImage:
    """Return a cached guest image, building it first if needed.

    The image is keyed by the Debian package versions and the init script; a second call is
    served from the cache without running apt (package versions are re-resolved at most once
    a day). Raises :class:`GuestUnavailable` when apt/dpkg-deb or the packages are missing.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    say = progress or (lambda _msg: None)
    image = _cached_image(cache, fresh_only=True)
    if image is not None:
        return image
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestUnavailable(
            f"cannot create the guest image cache {cache}: {exc}; set FIREROUTE_CACHE"
        ) from exc
    with _locked(cache / ".lock"):
        image = _cached_image(cache, fresh_only=True)  # another process may have built it
        if image is not None:
            return image
        try:
            say("resolving Debian package versions")
            packages = _resolve_packages(say)
        except GuestUnavailable:
            stale = _cached_image(cache, fresh_only=False)
            if stale is None:
                raise
            say("apt is unavailable; using the previously built guest image")
            return stale
        (cache / "resolved.json").write_text(
            json.dumps({"time": time.time(), "packages": packages}, indent=2)
        )
        image_dir = cache / f"guest-{_image_key(packages)}"
        if (image_dir / "manifest.json").is_file():
            return _image_in(image_dir)
        _build(cache, image_dir, packages, say)
        say(f"guest image ready in {image_dir}")
        return _image_in(image_dir)


# --- cache ------------------------------------------------------------------------------------


def _image_key(packages: dict[str, str]) -> str:
    material = {
        "packages": packages,
        "init": hashlib.sha256(INIT_SCRIPT.encode()).hexdigest(),
        "modules": GUEST_MODULES,
        "builder": BUILDER_VERSION,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _image_in(image_dir: Path) -> GuestImage:
    return GuestImage(kernel=image_dir / "vmlinuz", initramfs=image_dir / "initramfs.cpio.gz")


def _cached_image(cache: Path, *, fresh_only: bool) -> GuestImage | None:
    try:
        record = json.loads((cache / "resolved.json").read_text())
        packages = {str(k): str(v) for k, v in record["packages"].items()}
        age = time.time() - float(record["time"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if fresh_only and not 0 <= age < RESOLVE_TTL_SECONDS:
        return None
    image_dir = cache / f"guest-{_image_key(packages)}"
    if not (image_dir / "manifest.json").is_file():
        return None
    return _image_in(image_dir)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- apt ----------------------------------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise GuestUnavailable(
            f"'{name}' not found: the guest image is built from Debian packages and needs "
            f"apt/dpkg (install '{package}')"
        )
    return path


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def _apt_get_update_hint(result: subprocess.CompletedProcess[str]) -> str:
    detail = (result.stderr or result.stdout).strip().splitlines()
    return detail[-1] if detail else f"exit status {result.returncode}"


class _AptSession:
    """apt-cache/apt-get with one ``apt-get update`` allowed when package lists are missing."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.updated = False
        self.apt_cache = _tool("apt-cache", "apt")
        self.apt_get = _tool("apt-get", "apt")

    def update(self, why: str) -> bool:
        if self.updated:
            return False
        self.updated = True
        self.say(f"{why}; running apt-get update once")
        result = _run([self.apt_get, "update"])
        if result.returncode != 0:
            raise GuestUnavailable(
                f"apt-get update failed ({_apt_get_update_hint(result)}); run it as root "
                "or provide a reachable Debian mirror"
            )
        return True

    def show(self, package: str) -> dict[str, str]:
        while True:
            result = _run([self.apt_cache, "show", "--no-all-versions", package])
            fields = _parse_stanza(result.stdout) if result.returncode == 0 else {}
            if fields.get("Version"):
                return fields
            if not self.update(f"apt knows no package {package}"):
                raise GuestUnavailable(
                    f"Debian package {package} is not available from apt "
                    f"({_apt_get_update_hint(result)}); enable Debian's main archive"
                )

    def download(self, pins: dict[str, str], dest: Path) -> None:
        argv = [self.apt_get, "download"]
        if os.geteuid() == 0:  # apt's _apt sandbox user cannot write to our private dir
            argv += ["-o", "APT::Sandbox::User=root"]
        argv += [f"{name}={version}" for name, version in sorted(pins.items())]
        while True:
            self.say("downloading " + ", ".join(sorted(pins)))
            result = _run(argv, cwd=dest)
            if result.returncode == 0:
                return
            if not self.update("apt-get download failed"):
                raise GuestUnavailable(
                    f"apt-get download {' '.join(sorted(pins))} failed: "
                    f"{_apt_get_update_hint(result)}"
                )


def _parse_stanza(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # first stanza only
        if line[0] not in " \t" and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _dependency_names(depends: str) -> list[str]:
    return [alt.split()[0] for group in depends.split(",") for alt in group.split("|") if alt]


def _resolve_packages(say: Callable[[str], None]) -> dict[str, str]:
    """Map each package the image is built from to its candidate version."""
    apt = _AptSession(say)
    meta = apt.show(KERNEL_METAPACKAGE)
    kernels = [
        name
        for name in _dependency_names(meta.get("Depends", ""))
        if re.fullmatch(r"linux-image-\d\S*-cloud-amd64", name)
    ]
    if not kernels:
        raise GuestUnavailable(
            f"{KERNEL_METAPACKAGE} does not depend on a linux-image-*-cloud-amd64 package "
            f"(Depends: {meta.get('Depends', '')!r})"
        )
    klibc = apt.show(KLIBC_PACKAGE)
    wanted = [kernels[0], BUSYBOX_PACKAGE, KLIBC_PACKAGE]
    wanted += [d for d in _dependency_names(klibc.get("Depends", "")) if d.startswith("libklibc")]
    return {name: apt.show(name)["Version"] for name in wanted}


# --- build ---------------------------------------------------------------------------------------


def _build(
    cache: Path, image_dir: Path, packages: dict[str, str], say: Callable[[str], None]
) -> None:
    dpkg_deb = _tool("dpkg-deb", "dpkg")
    with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as tmp:
        work = Path(tmp)
        debs, root, out = work / "debs", work / "root", work / "image"
        for directory in (debs, root, out):
            directory.mkdir()
        _AptSession(say).download(packages, debs)
        for deb in sorted(debs.glob("*.deb")):
            say(f"extracting {deb.name}")
            result = _run([dpkg_deb, "-x", str(deb), str(root)])
            if result.returncode != 0:
                raise GuestUnavailable(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")
        say("building initramfs")
        kernel, modules = _build_initramfs(root, out / "initramfs.cpio.gz")
        shutil.copyfile(kernel, out / "vmlinuz")
        manifest = {"packages": packages, "kernel": kernel.name, "modules": modules}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            out.rename(image_dir)
        except OSError:
            if not (image_dir / "manifest.json").is_file():
                raise


def _first(root: Path, patterns: list[str], what: str) -> Path:
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found[-1]
    raise GuestUnavailable(f"{what} not found in the extracted packages ({', '.join(patterns)})")


def _build_initramfs(root: Path, dest: Path) -> tuple[Path, list[str]]:
    """Write the initramfs to ``dest``; return the kernel image and the module load order."""
    kernel = _first(root, ["boot/vmlinuz-*"], "kernel image")
    moddir = _first(root, ["lib/modules/*/kernel", "usr/lib/modules/*/kernel"], "kernel modules")
    busybox = _first(root, ["bin/busybox", "usr/bin/busybox"], "busybox")
    ipconfig = _first(root, ["usr/lib/klibc/bin/ipconfig"], "klibc ipconfig")
    interp = _elf_interpreter(ipconfig.read_bytes())
    order = _module_load_order(moddir, GUEST_MODULES)
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()

    with gzip.GzipFile(dest, "wb", compresslevel=6, mtime=0) as gz:
        cpio = _CpioWriter(gz)
        for directory in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "run", "tmp"):
            cpio.directory(directory)
        cpio.device("dev/console", major=5, minor=1)
        cpio.file("init", INIT_SCRIPT.encode(), mode=0o755)
        cpio.file("bin/busybox", busybox.read_bytes(), mode=0o755)
        for applet in applets:
            if applet not in ("busybox", "ipconfig"):
                cpio.symlink(f"bin/{applet}", "busybox")
        cpio.file("bin/ipconfig", ipconfig.read_bytes(), mode=0o755)
        if interp:  # klibc's "shared" binaries need /lib/klibc-<hash>.so as their interpreter
            parts = interp.strip("/").split("/")
            for depth in range(1, len(parts)):
                cpio.directory("/".join(parts[:depth]))
            library = _first(root, [interp.lstrip("/"), "usr" + interp], interp)
            cpio.file("/".join(parts), library.read_bytes(), mode=0o755)
        for name, path in order:
            cpio.file(f"lib/modules/{name}.ko", path.read_bytes(), mode=0o644)
        cpio.file("etc/fireroute-modules", "".join(f"{n}\n" for n, _ in order).encode())
        cpio.file("etc/hosts", b"127.0.0.1 localhost\n")
        cpio.close()
    return kernel, [name for name, _ in order]


def _elf_interpreter(data: bytes) -> str | None:
    """The PT_INTERP path of a 64-bit little-endian ELF executable, if any."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise GuestUnavailable("klibc ipconfig is not a 64-bit little-endian ELF binary")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == 3:  # PT_INTERP
            return data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    return None


def _module_load_order(moddir: Path, targets: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Modules needed for ``targets``, dependencies first (from each module's ``depends=``)."""
    index = {p.name[: -len(".ko")].replace("-", "_"): p for p in moddir.rglob("*.ko")}
    builtin_file = moddir.parent / "modules.builtin"
    builtin = set()
    if builtin_file.is_file():
        builtin = {
            Path(line).name.removesuffix(".ko").replace("-", "_")
            for line in builtin_file.read_text().split()
        }
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen or name in builtin:
            return
        if name in chain:
            raise GuestUnavailable(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        path = index.get(name)
        if path is None:
            raise GuestUnavailable(f"kernel module {name} not found under {moddir}")
        match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", path.read_bytes())
        deps = match.group(1).decode().split(",") if match else []
        for dep in deps:
            if dep:
                visit(dep.replace("-", "_"), chain + (name,))
        seen.add(name)
        order.append((name, path))

    for target in targets:
        visit(target, ())
    return order


class _CpioWriter:
    """Minimal writer for the "newc" cpio format the kernel unpacks an initramfs from."""

    def __init__(self, fh: gzip.GzipFile) -> None:
        self.fh = fh
        self.ino = 300000
        self.directories: set[str] = set()

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        fields = (
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.fh.write(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        self.fh.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        if name not in self.directories:
            self.directories.add(name)
            self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def close(self) -> None:
        self.ino = 0
        self._entry("TRAILER!!!", 0)
