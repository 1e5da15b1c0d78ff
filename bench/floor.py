"""The floor under a per-VM command written in Python, for the benchmark's single-VM section:
what any such command pays however it is written. Python started as fireroute's launcher
starts it (-S), the imports no Python state store avoids (_sqlite3, which loads functools,
and ipaddress), a WAL state file opened with a commit before and after, and the same two
processes fireroute runs, side by side: ``ip -batch`` for the tap and ``nft -f`` for the NAT
set elements. No validation, no conflict probe, no rollback, no output.

    floor.py up|down STATE   (in a namespace that has table ip floor with set s)
"""

import _sqlite3
import ipaddress
import os
import sys

SETUP = "add table ip floor\nadd set ip floor s { type ipv4_addr; }\n"
WORK = {
    "up": (
        "tuntap add dev fl0 mode tap\naddr add 172.19.0.1/30 dev fl0\nlink set dev fl0 up\n",
        "add element ip floor s { 172.19.0.2 }\n",
    ),
    "down": ("link del dev fl0\n", "delete element ip floor s { 172.19.0.2 }\n"),
}


def spawn(argv: list[str], data: str) -> int:
    fd = os.memfd_create("in")
    os.write(fd, data.encode())
    os.lseek(fd, 0, 0)
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, fd, 0)])
    os.close(fd)
    return pid


def main() -> int:
    verb, state = sys.argv[1], sys.argv[2]
    ipaddress.IPv4Network("172.19.0.0/30")
    db = _sqlite3.connect(state, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY, state TEXT)")
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT OR REPLACE INTO vms VALUES ('fl0', 'pending')")
    db.execute("COMMIT")
    ip_batch, nft = WORK[verb]
    pids = [
        spawn(["/usr/sbin/ip", "-batch", "-"], ip_batch),
        spawn(["/usr/sbin/nft", "-f", "-"], nft),
    ]
    failed = any(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE vms SET state = 'active'")
    db.execute("COMMIT")
    db.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
