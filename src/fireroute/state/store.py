"""SQLite state: one row per VM (its lease), reserved as ``pending`` before any kernel object
exists, ``active`` once everything is in place, ``removing`` while it is being taken down.

All mutations happen under an exclusive lock on the state file itself (bounded wait, then
:class:`Busy`), inside
``BEGIN IMMEDIATE`` transactions; UNIQUE constraints are the second guard against two VMs
sharing a block, a tap or a name.
"""

from __future__ import annotations

import _thread
import fcntl
import os
import time
from ipaddress import IPv4Network, IPv6Network

try:  # the C module itself: the sqlite3 package adds datetime adapters, ~1.5 ms to import
    import _sqlite3 as sqlite3
except ImportError:  # pragma: no cover
    import sqlite3  # type: ignore[no-redef]

from fireroute import jsontext
from fireroute.addressing import hex_key, ula_pool
from fireroute.errors import Busy, ConflictError, StateError, UsageError
from fireroute.kernel.run import HELD_FDS
from fireroute.model import DEFAULT_CNI_TAP, Options, Vm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

SCHEMA_VERSION = 5  # 2: INDEXES; 3: PORTS; 4: NETNS; 5: V6 (an older file gets them on first use)
DEFAULT_PATH = "/var/lib/fireroute/state.db"
SHAPE = tuple(
    f"json_extract(options, '$.{f}')"
    for f in ("mode", "backend", "table", "bridge", "masquerade", "dhcp")
)
SHAPE6 = "json_extract(options, '$.ipv6')"
"""whether a VM is dual stack (1; NULL for a v4-only VM, whose options text has no ipv6): the
last column of vms_shape (from schema 5), so that a count per shape with it reads the index"""
INDEXES = (
    f"CREATE INDEX IF NOT EXISTS vms_shape ON vms({', '.join(SHAPE)}, uplink, {SHAPE6});\n"
    "CREATE INDEX IF NOT EXISTS vms_end ON vms(net_end);\n"
)
"""shapes() reads vms_shape instead of every row's options (~1 instead of ~4.5 ms at 4000
VMs, on every up and down); first_free() and taken_from() range over vms_end from the
free_from mark instead of scanning every lease"""
PORTS = (
    "CREATE TABLE IF NOT EXISTS ports (port INTEGER NOT NULL, name TEXT NOT NULL);\n"
    "CREATE INDEX IF NOT EXISTS ports_port ON ports(port);\n"
    "CREATE INDEX IF NOT EXISTS ports_name ON ports(name);\n"
)
"""the host ports each VM publishes (written with its options): claiming() finds the VMs that
may hold a port by index, where a match over every lease's options grew with the VM count
(bench/ports.py: up --publish 1.36x from 20 to 4000 VMs before, 1.10x after)"""
CNI = "json_extract(options, '$.mode') = 'cni'"
NETNS = (
    "CREATE INDEX IF NOT EXISTS vms_netns ON vms(netns);\n"
    "CREATE UNIQUE INDEX IF NOT EXISTS vms_netns_ifname\n"
    f"    ON vms(netns, json_extract(options, '$.ifname')) WHERE {CNI};\n"
    "CREATE UNIQUE INDEX IF NOT EXISTS vms_netns_tap\n"
    f"    ON vms(netns, coalesce(json_extract(options, '$.tap'), '{DEFAULT_CNI_TAP}'))\n"
    f"    WHERE {CNI};\n"
)
"""several CNI attachments in one namespace (a VM with two NICs, a pod on two networks):
in_netns() finds a namespace's attachments by index, and the two unique indexes are the
second guard (after the manager's check, which names the attachment) against two of them
making one ifname or one tap there. Before schema 4, ``netns`` was UNIQUE: one attachment per
namespace."""
V6 = (
    "CREATE UNIQUE INDEX IF NOT EXISTS vms_net6 ON vms(net6_start)\n"
    "    WHERE net6_start IS NOT NULL;\n"
    "CREATE INDEX IF NOT EXISTS vms_end6 ON vms(net6_end) WHERE net6_end IS NOT NULL;\n"
)
"""a dual-stack VM's IPv6 block (issue 24): ``net6_start``/``net6_end``, its first and last
address as 32 hex digits (addressing.hex_key: SQLite's integers are 64 bits; fixed-width hex
text sorts like the numbers). The unique index is the second guard against two VMs sharing a
block; taken6_from() ranges over vms_end6 as taken_from() does over vms_end. Both are partial:
a v4-only VM's row (NULL there) has no entry in either, so writing and deleting it costs what it
did before schema 5 (two more entries per row were ~2% of a store-level up at 4000 VMs). An
older file gets the columns (NULL: v4-only) on first writable use."""
POOL6 = "pool6"
"""meta key: the state file's own IPv6 pool (a ULA /48, docs/ipv6-plan.md 1.2), recorded by
the first reservation of a VM that takes its block from it; a v4-only file never has one"""
GATEWAY6 = "gateway6"
"""meta key: ``own`` once the file's NAT VMs with IPv6 have gateways of their own
(addressing.gateway6_text), recorded by the first reservation of such a VM in a file holding no
IPv6 lease. A file whose IPv6 leases predate it has none: every NAT VM with IPv6 there keeps
``fe80::1`` (its guest was told so), a new one too, until the file holds no IPv6 lease"""
FREE6_FROM = "free6_from:"
"""meta key prefix: ``free6_from:<pool start, hex_key>`` is, as a hex_key, an address below
which the pool has no free /64 (raised by every v6 allocation, lowered by every removal): the
v6 twin of FREE_FROM, kept apart so that neither's arithmetic meets the other's text"""
FREE_FROM = "free_from:"
"""meta key prefix: ``free_from:<pool start>`` is an address below which every address of
that pool is leased, so the search for a free block starts there, not at the pool's start
(lowered by every removal, raised by every allocation)"""
VMS = """CREATE TABLE IF NOT EXISTS vms (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'removing')),
    net_start INTEGER UNIQUE,
    net_end INTEGER,
    prefix INTEGER,
    tap TEXT NOT NULL UNIQUE,
    mac TEXT NOT NULL,
    uplink TEXT NOT NULL,
    options TEXT NOT NULL,
    netns TEXT,
    created REAL NOT NULL,
    net6_start TEXT,
    net6_end TEXT
);
"""
COLUMNS = "name, state, net_start, net_end, prefix, tap, mac, uplink, options, netns, created"
"""the columns of schemas 1 to 4 (what an upgrade from before 4 copies)"""
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
    + VMS
    + INDEXES
    + PORTS
    + NETNS
    + V6
)


def default_path() -> str:
    return os.environ.get("FIREROUTE_STATE") or DEFAULT_PATH


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)


def _refuse_file_mount(path: str) -> None:
    """A state file with a second hard link, or that is itself a mount point (a bind mount of
    the file alone), is refused:
    SQLite keeps its write-ahead log beside the path it was opened by, so two paths to one
    file would write two logs and lose commits. A directory's entry for the name carries the
    inode underneath the mount, a stat of the path the mounted file's."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        with os.scandir(os.path.dirname(real)) as entries:
            ino = next((e.inode() for e in entries if e.name == os.path.basename(real)), None)
    except OSError:
        return  # not there yet, or unreadable: opening it says what is wrong
    if st.st_nlink > 1:
        raise StateError(
            f"state file {path} has {st.st_nlink} hard links: SQLite keeps its journal beside "
            "the path, so each name would keep its own; use one name (a symlink is fine)"
        )
    if ino is not None and ino != st.st_ino:
        raise StateError(
            f"state file {path} is a bind mount of the file alone: SQLite keeps its journal "
            "beside the path, so each path would keep its own; bind-mount its directory instead"
        )


class Store:
    def __init__(self, path: str | os.PathLike[str], create: bool = True) -> None:
        path = self.path = os.fspath(path)
        self._marks: dict[str, str] = {}  # free_from marks found, written by reserve()
        self._pool6: IPv6Network | None = None  # a new own pool, recorded by reserve()
        self._instance: str | None = None
        self.version = SCHEMA_VERSION  # what the open file has (an older one read-only)
        if not create and not os.path.exists(path):
            self.db: sqlite3.Connection | None = None
            return
        _refuse_file_mount(path)
        try:
            if not create:
                self.db = _open_readable(path)
            else:
                _make_parent(path)
                self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            # WAL with synchronous=NORMAL: a commit is one append, no fsync. A killed process
            # loses nothing; a power cut may lose the last commits but never consistency (and
            # the kernel objects are gone then anyway: restore/gc reconcile).
            self.db.execute("PRAGMA synchronous = NORMAL")
            version = self.version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION or version < 0:
                raise StateError(
                    f"state file {path} has schema version {version}; this fireroute knows "
                    f"{SCHEMA_VERSION}: upgrade fireroute"
                )
            if version == 0 or (version < SCHEMA_VERSION and os.access(path, os.W_OK)):
                # Many processes may meet a new state file at once (64 parallel ups), and
                # switching to WAL fails rather than waits while another connection is busy:
                # create the schema (or add what a newer version has) under the state lock.
                with self.locked():
                    now = self.db.execute("PRAGMA user_version").fetchone()[0]
                    if now == 0:
                        self.db.execute("PRAGMA journal_mode = WAL")
                        self.db.executescript(
                            SCHEMA
                            + "INSERT OR IGNORE INTO meta (key, value) VALUES "
                            + f"('instance', '{new_instance()}');"
                            + f"PRAGMA user_version = {SCHEMA_VERSION};"
                        )
                    elif now < SCHEMA_VERSION:
                        self._upgrade(path, now)
                    self.version = SCHEMA_VERSION
            else:
                net6 = ", net6_start, net6_end" if version >= 5 else ""
                self.db.execute(
                    "SELECT name, state, net_start, net_end, prefix, tap, mac, "
                    f"uplink, options, netns{net6} FROM vms LIMIT 1"
                ).fetchall()
                self.db.execute("SELECT key, value FROM meta LIMIT 1").fetchall()
                if version >= 3:
                    self.db.execute("SELECT port, name FROM ports LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot use state file {path}: {exc}") from None
        except OSError as exc:
            raise StateError(f"cannot use state file {path}: {exc.strerror}") from None

    def _upgrade(self, path: str, now: int) -> None:
        """An older file (schema ``now``) gets what this version adds, in one transaction
        (under the state lock): the indexes, the ports table filled from every lease's options
        (before 3), the vms table without UNIQUE on netns (before 4: SQLite drops a constraint
        only by copying the table), the IPv6 columns, NULL in every old row (before 5, and the
        shape index made again with its ipv6 column). A lease whose options cannot be read,
        or any other failure, leaves the file as it was."""
        assert self.db is not None
        db = self.db
        db.execute("BEGIN IMMEDIATE")  # statement by statement: executescript would commit
        try:
            if now < 4:
                db.execute("ALTER TABLE vms RENAME TO vms_old")
                db.execute(VMS)
                db.execute(f"INSERT INTO vms ({COLUMNS}) SELECT {COLUMNS} FROM vms_old")
                db.execute("DROP TABLE vms_old")  # and its indexes, made again below
            elif now < 5:  # the new table above has them already
                db.execute("ALTER TABLE vms ADD COLUMN net6_start TEXT")
                db.execute("ALTER TABLE vms ADD COLUMN net6_end TEXT")
                db.execute("DROP INDEX IF EXISTS vms_shape")  # made again with SHAPE6 below
            for statement in (INDEXES + PORTS + NETNS + V6).split(";\n"):
                if statement.strip():
                    db.execute(statement)
            if now < 3:
                self._fill_ports(path)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _fill_ports(self, path: str) -> None:
        assert self.db is not None
        rows = self.db.execute("SELECT name, options FROM vms").fetchall()
        claims = []
        for name, options in rows:
            try:
                claims += [(port, name) for port in _published(str(options))]
            except (ValueError, KeyError, TypeError, AttributeError, UsageError) as exc:
                raise StateError(
                    f'cannot upgrade state file {path}: the options of vm "{name}" are '
                    f"unreadable ({exc})"
                ) from None
        self.db.executemany("INSERT INTO ports (port, name) VALUES (?, ?)", claims)

    # -- locking ---------------------------------------------------------------------------
    def locked(self, timeout: float | None = None) -> _Lock:
        """``with store.locked():`` holds the state lock (bounded wait, then Busy). Without a
        state file (a read-only open of a path where there is none) there is nothing to lock,
        and none is made."""
        return _Lock(self.path, timeout, exists=self.db is not None)

    # -- reads -----------------------------------------------------------------------------
    def _rows(self, where: str = "", args: tuple[object, ...] = (), limit: int = -1) -> list[Vm]:
        if self.db is None:
            return []
        net6 = "net6_start, net6_end" if self.version >= 5 else "NULL, NULL"  # older: read-only
        try:
            rows = self.db.execute(
                "SELECT name, state, net_start, prefix, tap, mac, uplink, options, netns, "
                f"{net6} FROM vms {where} ORDER BY net_start IS NULL, net_start, name "
                "LIMIT ?",
                (*args, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from None
        instance = self.instance()
        vms = [_vm(r) for r in rows]
        own6 = not any(v.net6 for v in vms) or self.meta(GATEWAY6) == "own"
        for vm in vms:
            vm.owner = instance
            vm.own_gateway6 = own6
        return vms

    def get(self, name: str) -> Vm | None:
        rows = self._rows("WHERE name = ?", (name,))
        return rows[0] if rows else None

    def all(self) -> list[Vm]:
        return self._rows()

    def named(self, prefix: str, limit: int = -1) -> list[Vm]:
        """The VMs whose name starts with ``prefix``, at most ``limit`` (-1: all), in the
        order of :meth:`all` (found by the primary key's index: the other VMs are never
        built)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return self._rows("WHERE name >= ? AND name < ?", (prefix, end), limit)

    def claiming(self, ports: list[int]) -> list[Vm]:
        """The VMs that may publish one of the host ``ports``: found by their recorded
        options' text (a spec ``"PORT:...`` or ``...:PORT:...``; a MAC may match too, the
        caller compares the specs), so the other VMs are never built."""
        if not ports:
            return []
        if self.version < 3:  # a read-only state file of an older version
            patterns = [pat for p in sorted(set(ports)) for pat in (f'%"{p}:%', f"%:{p}:%")]
            where = " OR ".join(["options LIKE ?"] * len(patterns))
            return self._rows(f"WHERE {where}", tuple(patterns))
        marks = ", ".join("?" * len(set(ports)))
        where = f"WHERE name IN (SELECT name FROM ports WHERE port IN ({marks}))"
        return self._rows(where, tuple(sorted(set(ports))))

    def shapes(self) -> list[tuple[object, ...]]:
        """(mode, backend, table, bridge, masquerade, dhcp, uplink, ipv6, count) over all VMs:
        what up/down need to know about the other VMs, without building 4000 VM objects."""
        if self.db is None:
            return []
        cols = ", ".join((*SHAPE, "uplink", SHAPE6))
        return list(
            self.db.execute(f"SELECT {cols}, COUNT(*) FROM vms GROUP BY 1, 2, 3, 4, 5, 6, 7, 8")
        )

    def count(self) -> int:
        if self.db is None:
            return 0
        return int(self.db.execute("SELECT COUNT(*) FROM vms").fetchone()[0])

    def first_free(self, lo: int, hi: int) -> int:
        """The lowest address >= lo that no lease covers (hi + 1 if none up to hi): where the
        search for a free block starts. In SQL (index on net_start), so that finding a block
        does not walk thousands of leases in Python; and from the pool's ``free_from`` mark,
        so that it does not walk them in SQL either. The answer becomes the new mark with the
        next ``reserve``."""
        if self.db is None:
            return lo
        key = f"{FREE_FROM}{lo}"
        mark = self.meta(key)
        start = max(lo, int(mark)) if mark and mark.isdigit() else lo
        row = self.db.execute(
            "SELECT MIN(x) FROM ("
            " SELECT :lo AS x WHERE NOT EXISTS"
            "  (SELECT 1 FROM vms WHERE net_end >= :lo AND +net_start <= :lo)"
            " UNION ALL"
            " SELECT v.net_end + 1 FROM vms v WHERE v.net_end >= :lo AND v.net_end < :hi"
            "  AND NOT EXISTS (SELECT 1 FROM vms w WHERE w.net_start = v.net_end + 1))",
            {"lo": start, "hi": hi},
        ).fetchone()
        found = int(row[0]) if row and row[0] is not None else hi + 1
        self._marks[key] = str(found)
        return found

    def taken_from(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Leases overlapping [lo, hi], in address order (found over vms_end: from ``lo``,
        which the caller takes from the free_from mark, to the pool's end)."""
        if self.db is None:
            return []
        return sorted(
            self.db.execute(
                # "+net_start": not over the net_start index, which would walk from the pool's
                # first lease
                "SELECT net_start, net_end FROM vms WHERE net_end >= ? AND +net_start <= ?",
                (lo, hi),
            )
        )

    def taken6_from(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """IPv6 leases overlapping [lo, hi], as (first, last) numbers in address order: the
        v6 twin of taken_from (over vms_end6, from ``lo``, which the caller takes from the
        free6_from mark)."""
        if self.db is None or self.version < 5:  # an older file (read-only) has none
            return []
        rows = self.db.execute(
            "SELECT net6_start, net6_end FROM vms WHERE net6_end >= ? AND +net6_start <= ?",
            (hex_key(lo), hex_key(hi)),
        )
        return sorted((int(s, 16), int(e, 16)) for s, e in rows)

    def free6_from(self, lo: int) -> int:
        """Where the search for a free /64 of the pool starting at ``lo`` starts: its
        free6_from mark (below it no block is free), or ``lo``."""
        mark = self.meta(f"{FREE6_FROM}{hex_key(lo)}")
        try:
            return max(lo, int(mark, 16)) if mark else lo
        except ValueError:
            return lo

    def mark6(self, lo: int, below: int) -> None:
        """No /64 of the pool starting at ``lo`` is free below ``below`` (the lowest free one
        an allocation found): the mark the next reserve() writes with its VMs."""
        self._marks[f"{FREE6_FROM}{hex_key(lo)}"] = hex_key(below)

    def own_pool6(self) -> IPv6Network:
        """The state file's own IPv6 pool: the recorded one; else a new ULA /48
        (addressing.ula_pool), which the next reserve() of a VM with a block from it records
        (and refuses that reservation if another had recorded a different one first)."""
        have = self.meta(POOL6)
        if have:
            return IPv6Network(have)
        if self._pool6 is None:
            self._pool6 = ula_pool(os.urandom(5))
        return self._pool6

    def is_tap(self, dev: str) -> bool:
        return self.tap_owner(dev) is not None

    def taken(self) -> list[tuple[int, int]]:
        if self.db is None:
            return []
        return list(
            self.db.execute("SELECT net_start, net_end FROM vms WHERE net_start IS NOT NULL")
        )

    def mac_owner(self, mac: str) -> str | None:
        if self.db is None:
            return None
        row = self.db.execute(  # clones share their guest's MAC by design: not counted
            "SELECT name FROM vms WHERE mac = ? AND json_extract(options, '$.mode') != 'clone'",
            (mac.upper(),),
        ).fetchone()
        return row[0] if row else None

    def in_netns(self, netns: str) -> list[Vm]:
        """The VMs (CNI attachments) in the namespace at path ``netns``."""
        return self._rows("WHERE netns = ?", (netns,))

    def tap_owner(self, tap: str) -> str | None:
        if self.db is None:
            return None
        row = self.db.execute("SELECT name FROM vms WHERE tap = ?", (tap,)).fetchone()
        return row[0] if row else None

    def instance(self) -> str:
        """A short random id of this state file: clone namespaces are named with it, so gc
        and teardown recognise their own namespaces and never another state file's."""
        if self._instance is not None:
            return self._instance
        have = self.meta("instance")
        if have or self.db is None:
            self._instance = have or "new"
            return self._instance
        token = new_instance()  # a file made before ids were written at creation gets one now
        if os.access(self.path, os.W_OK):
            with self._tx() as db:
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('instance', ?)", (token,)
                )
        self._instance = self.meta("instance") or token
        return self._instance

    def own_gateway6(self) -> bool:
        """Have this file's NAT VMs with IPv6 gateways of their own (:data:`GATEWAY6`
        recorded; or no IPv6 lease here that keeps ``fe80::1``, so the next reservation
        records it)?"""
        if self.db is None or self.version < 5 or self.meta(GATEWAY6) == "own":
            return True
        row = self.db.execute("SELECT 1 FROM vms WHERE net6_start IS NOT NULL LIMIT 1")
        return row.fetchone() is None

    def meta(self, key: str) -> str | None:
        if self.db is None:
            return None
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- writes ----------------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        assert self.db is not None, "writes need a state file"
        return _Transaction(self.db, self.path)

    def reserve(self, vms: list[Vm], meta: dict[str, str] | None = None) -> None:
        now = time.time()
        marks, self._marks = self._marks, {}  # found for this reservation, and only for it
        texts: dict[int, str] = {}  # a batch's VMs share one Options: its text made once

        def text(o: Options) -> str:
            t = texts.get(id(o))
            if t is None:
                t = texts[id(o)] = jsontext.dumps(o.identity())
            return t

        pool6, self._pool6 = self._pool6, None  # drafted for this reservation, and only for it
        dual = [v for v in vms if v.net6 is not None]
        rows: list[tuple[object, ...]] = [
            (
                v.name,
                int(v.net.network_address) if v.net else None,
                int(v.net.broadcast_address) if v.net else None,
                v.net.prefixlen if v.net else None,
                v.tap,
                v.mac,
                v.uplink,
                text(v.options),
                v.netns,
                now,
            )
            for v in vms
        ]
        cols6 = marks6 = ""
        if dual:  # a v4-only batch's rows leave them NULL, as before they existed
            cols6, marks6 = ", net6_start, net6_end", ", ?, ?"
            rows = [(*r, *_net6_keys(v.net6)) for r, v in zip(rows, vms, strict=True)]
        with self._tx() as db:
            own6 = [v for v in dual if v.options.pool6 is None]
            if own6:
                _record_pool6(db, pool6, own6, self.path)
            db.executemany(
                "INSERT INTO vms (name, state, net_start, net_end, prefix, tap, mac, uplink, "
                f"options, netns, created{cols6}) "
                f"VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?{marks6})",
                rows,
            )
            _write_ports(db, [(v.name, v.options) for v in vms])
            for k, v in [*(meta or {}).items(), *marks.items()]:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))

    @staticmethod
    def _starts(db: sqlite3.Connection, names: list[str]) -> tuple[list[int], list[str]]:
        """The first addresses of these VMs' leases (DHCP leases have none), and of their v6
        blocks (as hex_keys; v4-only VMs have none)."""
        out: list[int] = []
        out6: list[str] = []
        for n in names:
            row = db.execute("SELECT net_start, net6_start FROM vms WHERE name = ?", (n,))
            got = row.fetchone()
            if got and got[0] is not None:
                out.append(int(got[0]))
            if got and got[1] is not None:
                out6.append(str(got[1]))
        return out, out6

    def set_options(self, name: str, options: Options) -> None:
        """A VM's options changed in place (``policy``)."""
        with self._tx() as db:
            db.execute(
                "UPDATE vms SET options = ? WHERE name = ?",
                (jsontext.dumps(options.identity()), name),
            )
            db.execute("DELETE FROM ports WHERE name = ?", (name,))
            _write_ports(db, [(name, options)])

    def rename(self, old: str, new: str, state: str) -> None:
        """A lease renamed (a ready VM claimed, ready.py), its ports with it, and its state
        set, in one transaction."""
        with self._tx() as db:
            db.execute("UPDATE vms SET name = ?, state = ? WHERE name = ?", (new, state, old))
            db.execute("UPDATE ports SET name = ? WHERE name = ?", (new, old))

    def set_state(self, names: list[str], state: str) -> None:
        if self.db is None:  # no state file: nothing recorded, nothing to change
            return
        with self._tx() as db:
            db.executemany("UPDATE vms SET state = ? WHERE name = ?", [(state, n) for n in names])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def remove(
        self, names: list[str], drop_meta: Sequence[str] = (), meta: dict[str, str] | None = None
    ) -> None:
        """The leases ``names`` gone, the meta keys ``drop_meta`` with them, and ``meta``
        written: one transaction."""
        if self.db is None:
            return
        with self._tx() as db:
            starts, starts6 = self._starts(db, names)
            db.executemany(  # a freed block lowers the free_from mark of the pool it is in
                "UPDATE meta SET value = CAST(:start AS TEXT) "
                f"WHERE key LIKE '{FREE_FROM}%' AND CAST(value AS INTEGER) > :start "
                f"AND CAST(substr(key, {len(FREE_FROM) + 1}) AS INTEGER) <= :start",
                [{"start": start} for start in starts],
            )
            if starts6:  # hex_keys of one width: text order is number order
                db.executemany(
                    "UPDATE meta SET value = :start "
                    f"WHERE key LIKE '{FREE6_FROM}%' AND value > :start "
                    f"AND substr(key, {len(FREE6_FROM) + 1}) <= :start",
                    [{"start": start} for start in starts6],
                )
            db.executemany("DELETE FROM vms WHERE name = ?", [(n,) for n in names])
            db.executemany("DELETE FROM ports WHERE name = ?", [(n,) for n in names])
            db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in drop_meta])
            for k, v in (meta or {}).items():
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))


def lock_timeout() -> float:
    """FIREROUTE_LOCK_TIMEOUT: seconds to wait for the state lock (default 60)."""
    text = os.environ.get("FIREROUTE_LOCK_TIMEOUT", "60")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:
        raise UsageError(
            f'invalid FIREROUTE_LOCK_TIMEOUT "{text}": expected seconds, such as 60 or 0.5'
        )
    return value


LOCK_BYTE = 0x7FFF0000
"""The byte of the state file the state lock covers: an open-file-description (OFD) lock,
far from the bytes SQLite locks (from 0x40000000, 512 bytes), so the two never meet."""
_LOCK_FDS: dict[tuple[int, int], tuple[int, _thread.LockType]] = {}
"""Per state file (device, inode): the descriptor its lock is taken on, kept open for the
process's life (closing any descriptor of a file drops the process's POSIX locks on it, which
are SQLite's), and a lock for the process's own threads (an OFD lock does not exclude
another thread using the same descriptor)."""
_KEPT: list[int] = []
"""descriptors of a file already in _LOCK_FDS, opened when a stat of the path had not found it
there (made or renamed between the two): never closed either. Only that race adds one: a
long-lived process (serve, api in-process) locking a file again reuses its descriptor (it
opened one per lock, and ran out of descriptors: found by the property test as nobody)."""


def _after_fork_in_child() -> None:
    """A forked child shares the parent's open file descriptions, and so its OFD locks: it
    opens its own descriptor instead (found by review: a child took the lock its parent
    held). The parent's stay open in the child (closing one would drop nothing of SQLite's
    there, but the child may have no use for them either way)."""
    _LOCK_FDS.clear()
    HELD_FDS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Lock:
    """The state lock: an exclusive OFD lock on one byte of the state file. It belongs to the
    file, not to a path: a symlink, ``..``, a bind mount of the directory or of the file
    itself all reach the same lock. Its descriptor is inherited by every child started while
    it is held (HELD_FDS), so a child that outlives a killed fireroute keeps the lock until it
    has finished. Context managers are written out as classes here: contextlib costs ~1 ms of
    start-up."""

    def __init__(self, path: str, timeout: float | None, exists: bool = True) -> None:
        self.path = path
        self.timeout = lock_timeout() if timeout is None else timeout
        self.exists = exists
        self.fd = -1
        self.threads: _thread.LockType | None = None

    def _open(self) -> tuple[int, _thread.LockType]:
        try:  # a file this process has a descriptor of: that one (a new one would be kept)
            st = os.stat(self.path)
            known = _LOCK_FDS.get((st.st_dev, st.st_ino))
        except OSError:
            known = None  # not there yet, or unreadable: the open below says which
        if known is not None:
            return known
        try:
            _make_parent(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot lock state file {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in _LOCK_FDS:
            _KEPT.append(fd)
        else:
            _LOCK_FDS[key] = (fd, _thread.allocate_lock())
        return _LOCK_FDS[key]

    def __enter__(self) -> None:
        if not self.exists:
            return
        fd, threads = self._open()
        deadline = time.monotonic() + self.timeout
        if not threads.acquire(timeout=self.timeout):
            raise Busy(
                f"state file {self.path} is busy: another thread held it for {self.timeout:g}s"
            )
        try:
            self._take(fd, deadline)
        except BaseException:
            threads.release()
            raise
        self.fd, self.threads = fd, threads
        HELD_FDS.add(fd)

    def _take(self, fd: int, deadline: float) -> None:
        tries = 0
        while True:
            try:
                _ofd_lock(fd, fcntl.F_WRLCK)
                break
            except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held by another
                tries += 1
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"state file {self.path} is busy: another fireroute process "
                        f"held it for {self.timeout:g}s (retried {tries} times)"
                    ) from None
                time.sleep(min(0.002 * tries, 0.05))
            except OSError as exc:
                raise StateError(f"cannot lock state file {self.path}: {exc.strerror}") from None

    def __exit__(self, *exc: object) -> None:
        if self.threads is None:
            return
        HELD_FDS.discard(self.fd)
        _ofd_lock(self.fd, fcntl.F_UNLCK)
        self.threads.release()
        self.fd, self.threads = -1, None


def _ofd_lock(fd: int, kind: int) -> None:
    import struct

    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", kind, os.SEEK_SET, LOCK_BYTE, 1, 0))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception), with SQLite's
    errors turned into fireroute's."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self.db = db
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state file {self.path}: {exc}") from None
        return self.db

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        try:
            if kind is not None:
                self.db.execute("ROLLBACK")
            else:
                self.db.execute("COMMIT")
        except sqlite3.Error as err:
            if kind is None:
                raise StateError(f"cannot write state file {self.path}: {err}") from None
        if isinstance(exc, sqlite3.IntegrityError):
            raise ConflictError(f"state file {self.path} refused the lease: {exc}") from None
        if isinstance(exc, sqlite3.Error):
            raise StateError(f"cannot write state file {self.path}: {exc}") from None


def new_instance() -> str:
    """A new state file's id: 8 hex digits from the kernel's random source (what
    secrets.token_hex(4) returns, without importing secrets on a host's first up: ~11 ms in
    bench/suite.py's importtime of a first up)."""
    return os.urandom(4).hex()


def _net6_keys(net6: IPv6Network | None) -> tuple[str | None, str | None]:
    """A v6 block's net6_start and net6_end (None, None for a v4-only VM)."""
    if net6 is None:
        return None, None
    return hex_key(int(net6.network_address)), hex_key(int(net6.broadcast_address))


def _record_pool6(
    db: sqlite3.Connection, drafted: IPv6Network | None, vms: list[Vm], path: str
) -> None:
    """Inside a reservation: ``drafted`` (a new own pool, if own_pool6 made one) recorded
    unless one is (INSERT OR IGNORE), then read back: each of ``vms`` (blocks from the own
    pool) must lie in the recorded one, else the reservation is refused (another up recorded
    a different pool between this one's allocation and its reservation; up holds the state
    lock across both, so only a caller that does not can meet this)."""
    if drafted is not None:
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (POOL6, str(drafted)))
    row = db.execute("SELECT value FROM meta WHERE key = ?", (POOL6,)).fetchone()
    pool = IPv6Network(row[0]) if row else None
    for v in vms:
        if pool is None or not v.net6.subnet_of(pool):  # type: ignore[union-attr]
            raise ConflictError(
                f'state file {path}: the IPv6 block {v.net6} of vm "{v.name}" is not in the '
                f"state file's IPv6 pool ({pool or 'none recorded'}); run up again"
            )


def _write_ports(db: sqlite3.Connection, vms: list[tuple[str, Options]]) -> None:
    rows = [(p.port, name) for name, o in vms for p in o.publish]
    if rows:
        db.executemany("INSERT INTO ports (port, name) VALUES (?, ?)", rows)


def _published(options: str) -> list[int]:
    """The host ports a lease's recorded options publish (for a file made before PORTS)."""
    data = jsontext.loads(options)
    if not isinstance(data, dict):
        raise TypeError("not an object")
    return [p.port for p in Options.from_identity(data).publish]


def _open_readable(path: str) -> sqlite3.Connection:
    """Open for reading; where the file or its folder is read-only (WAL needs to create its
    shared-memory file next to it), read it as an immutable snapshot instead."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc) and "unable to open" not in str(exc):
            raise
    db.close()
    return sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None)


def _vm(row: tuple[object, ...]) -> Vm:
    name, state, start, prefix, tap, mac, uplink, options, netns, *v6 = row
    start6, end6 = v6 or (None, None)  # a row recorded before schema 5 has no v6 columns
    try:
        data = jsontext.loads(str(options))
        if not isinstance(data, dict):
            raise TypeError(f"options are {type(data).__name__}, not a JSON object")
        opts = Options.from_identity(data)
        net6 = None
        if start6 is not None and end6 is not None:  # the prefix from the block's size
            first, size = int(str(start6), 16), int(str(end6), 16) - int(str(start6), 16) + 1
            net6 = IPv6Network((first, 128 - size.bit_length() + 1))
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f'state of vm "{name}" is unreadable: {exc}') from None
    net = IPv4Network((int(str(start)), int(str(prefix)))) if start is not None else None
    vm = Vm(str(name), net, str(tap), str(mac), str(uplink), opts, str(state), net6)
    vm.netns_name = str(netns) if netns else None
    return vm
