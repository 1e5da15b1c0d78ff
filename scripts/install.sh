#!/usr/bin/env bash
# Install fireroute and what it drives on a Debian 12 machine (run as root).
#   bash scripts/install.sh          # runtime: iproute2, nftables, iptables, conntrack; QEMU and busybox for the demo
#   bash scripts/install.sh --test   # also the test tools (pytest, hypothesis, ruff, mypy, radon, PyYAML,
#                                    # podman and Debian's CNI plugins for the CNI tests, containerd,
#                                    # runc and a CRI client (grpcio, CRI v1 stubs) for tests/cri)
# It creates a virtual environment in .venv (for the test tools; fireroute itself needs no
# package beyond Python's standard library) and links /usr/local/bin/fireroute to
# scripts/fireroute, a launcher that starts Debian's python3 without site-packages (-S): the
# command is called once per VM, and each millisecond of start-up counts.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi
need=()
for pair in ip:iproute2 nft:nftables iptables-nft:iptables qemu-system-x86_64:qemu-system-x86 \
            busybox:busybox-static conntrack:conntrack \
            cpio:cpio setpriv:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ -n "$extras" ]; then
  # the CNI tests drive the plugin through a real runtime (podman, its CNI backend) and chain
  # it with Debian's plugins (tuning, portmap); bench/cni.py compares it with ptp; tests/cri
  # drives it through containerd's CRI (containerd 1.6 with its runc shim, and runc)
  for pair in podman:podman crun:crun conmon:conmon /usr/lib/cni/ptp:containernetworking-plugins \
              /usr/share/containers/containers.conf:golang-github-containers-common \
              containerd:containerd containerd-shim-runc-v2:containerd runc:runc; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -e "${pair%%:*}" ] || need+=("${pair#*:}")
  done
fi
# apt lists are needed by the guest-image builder (apt-get download) too
if [ ${#need[@]} -gt 0 ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
  apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >/dev/null
fi
if [ ! -x .venv/bin/pip ]; then  # none yet, or one whose making was interrupted
  rm -rf .venv
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
ln -sf "$PWD/scripts/fireroute" /usr/local/bin/fireroute
# the same launcher is the CNI plugin (it acts as one when CNI_COMMAND is set)
mkdir -p /opt/cni/bin
ln -sf "$PWD/scripts/fireroute" /opt/cni/bin/fireroute
echo "fireroute $(/usr/local/bin/fireroute --version | cut -d' ' -f2) installed: $(command -v fireroute)"
if [ -z "$extras" ]; then
  cat <<'EOF'
CNI plugin: /opt/cni/bin/fireroute. A network configuration list to start from
(e.g. /etc/cni/conf.d/fcnet.conflist; see docs/cni.md):
{
  "cniVersion": "1.0.0",
  "name": "fcnet",
  "plugins": [
    {"type": "fireroute", "pool": "172.16.0.0/16", "tapName": "tap0"}
  ]
}
EOF
fi
