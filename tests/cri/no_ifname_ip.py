"""A CNI plugin for the negative control: fireroute's own plugin (run as containerd ran it),
whose ADD result then loses every IP entry on the interface named ``CNI_IFNAME``, so the only
address left is the VM interface's. Everything else (DEL, errors) is fireroute's as it is.

Run as ``python3 -S no_ifname_ip.py``, with the CNI environment and configuration."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(REPO, "scripts", "fireroute")

p = subprocess.run([LAUNCHER], input=sys.stdin.buffer.read(), capture_output=True)
sys.stderr.buffer.write(p.stderr)
out = p.stdout
if p.returncode == 0 and os.environ.get("CNI_COMMAND") == "ADD":
    result = json.loads(out)
    ifs = result.get("interfaces", [])
    ifname = os.environ["CNI_IFNAME"]
    result["ips"] = [ip for ip in result["ips"] if ifs[ip["interface"]]["name"] != ifname]
    out = json.dumps(result).encode()
sys.stdout.buffer.write(out)
sys.exit(p.returncode)
