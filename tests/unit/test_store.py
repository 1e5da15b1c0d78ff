"""The state store: the free_from mark never hides a free block (first_free answers what a
scan of every lease answers), and a state file of schema 1 is upgraded on use."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute import addressing
from fireroute.errors import Busy
from fireroute.model import Options, Vm
from fireroute.state.store import COLUMNS, FREE_FROM, INDEXES, SCHEMA_VERSION, SHAPE6, VMS, Store

POOL = IPv4Network("172.16.0.0/24")  # 64 blocks of /30
LO, HI = int(POOL.network_address), int(POOL.broadcast_address)


def lowest_uncovered(store: Store) -> int:
    covered = set()
    for start, end in store.taken():
        covered.update(range(int(start), int(end) + 1))
    return next((a for a in range(LO, HI + 1) if a not in covered), HI + 1)


def allocate(store: Store, name: str) -> bool:
    first = store.first_free(LO, HI)
    assert first == lowest_uncovered(store)
    if first > HI:
        return False
    ordinal = (first - LO) // 4
    net = addressing.block(POOL, 30, ordinal)
    store.reserve([Vm(name, net, f"t-{name}", "06:00:00:00:00:01", "eth0", Options())])
    return True


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 80)), max_size=120))
def test_marks_never_hide_a_free_block(tmp_path_factory, ops) -> None:
    store = Store(tmp_path_factory.mktemp("marks") / "s.db")
    names: list[str] = []
    for k, (add, pick) in enumerate(ops):
        if add or not names:
            if allocate(store, f"v{k}"):
                names.append(f"v{k}")
        else:
            store.remove([names.pop(pick % len(names))])
    assert store.first_free(LO, HI) == lowest_uncovered(store)


def test_the_mark_moves_with_allocations_and_removals(tmp_path) -> None:
    store = Store(tmp_path / "s.db")
    for i in range(5):
        allocate(store, f"v{i}")
    key = f"{FREE_FROM}{LO}"
    assert store.meta(key) == str(LO + 16)  # found before the fifth block was taken
    store.remove(["v1"])
    assert store.meta(key) == str(LO + 4)
    assert allocate(store, "again")
    assert store.first_free(LO, HI) == LO + 20


def test_a_schema_1_file_gets_the_shape_index(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "s.db"
    store = Store(path)
    allocate(store, "a")
    store.db.close()  # type: ignore[union-attr]
    db = sqlite3.connect(path)
    db.executescript("DROP INDEX vms_shape; PRAGMA user_version = 1;")
    db.close()
    again = Store(path)
    db = again.db
    assert db is not None
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    shapes_plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT json_extract(options, '$.mode'), COUNT(*) FROM vms GROUP BY 1"
    ).fetchall()
    assert "vms_shape" in " ".join(str(r) for r in shapes_plan)
    assert again.shapes() and again.get("a") is not None


def publishing(name: str, ordinal: int, *specs: str) -> Vm:
    from fireroute.model import Published

    net = addressing.block(POOL, 30, ordinal)
    o = Options(publish=tuple(Published.parse(t) for t in specs))
    return Vm(name, net, f"t-{name}", "06:00:00:00:00:01", "eth0", o)


def test_claiming_finds_the_vms_that_publish_a_port(tmp_path) -> None:
    """By the ports index, after reserve, an options change (publish/unpublish) and remove."""
    store = Store(tmp_path / "s.db")
    store.reserve([publishing("a", 0, "8080:80", "127.0.0.1:2222:22"), publishing("b", 1)])
    store.reserve([publishing("c", 2, "5353:53/udp")])
    assert [v.name for v in store.claiming([8080])] == ["a"]
    assert [v.name for v in store.claiming([2222, 5353])] == ["a", "c"]
    assert store.claiming([80, 22, 53]) == []  # guest ports are nobody's claim
    moved = publishing("a", 0, "9090:80")
    store.set_options("a", moved.options)
    assert store.claiming([8080, 2222]) == [] and [v.name for v in store.claiming([9090])] == ["a"]
    store.remove(["a"])
    assert store.claiming([9090]) == [] and [v.name for v in store.claiming([5353])] == ["c"]
    assert store.db is not None  # the index itself, which claiming reads: exactly c's port
    assert store.db.execute("SELECT port, name FROM ports").fetchall() == [(5353, "c")]


def test_a_schema_2_file_gets_the_ports_index(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "s.db"
    Store(path).reserve([publishing("a", 0, "8080:80"), publishing("b", 1, "1.2.3.4:81:80")])
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE ports; PRAGMA user_version = 2;")
    db.close()
    again = Store(path)
    assert again.db is not None
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [v.name for v in again.claiming([8080, 81])] == ["a", "b"]
    plan = again.db.execute("EXPLAIN QUERY PLAN SELECT name FROM ports WHERE port IN (1, 2)")
    assert "ports_port" in " ".join(str(r) for r in plan.fetchall())


@pytest.mark.parametrize("options", ['{"publish": ["nope"]}', '["a list"]', '{"publish": 7}'])
def test_an_upgrade_that_cannot_read_a_lease_changes_nothing(tmp_path, options) -> None:
    import sqlite3

    from fireroute.errors import StateError

    path = tmp_path / "s.db"
    Store(path).reserve([publishing("a", 0, "8080:80"), publishing("b", 1)])
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE ports; PRAGMA user_version = 2;")
    db.execute("UPDATE vms SET options = ? WHERE name = 'b'", (options,))
    db.commit()
    db.close()
    with pytest.raises(StateError, match='options of vm "b" are unreadable'):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # as it was
    assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'ports'").fetchall()
    db.close()


def test_an_older_file_it_may_not_write_is_matched_by_its_options(tmp_path, monkeypatch):
    """A schema-2 file that cannot be upgraded (not writable) is read as it is: claiming
    falls back to matching the recorded options, and finds the same VMs."""
    import os
    import sqlite3

    path = tmp_path / "s.db"
    Store(path).reserve([publishing("a", 0, "8080:80"), publishing("b", 1, "1.2.3.4:81:80")])
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE ports; PRAGMA user_version = 2;")
    db.close()
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    old = Store(path, create=False)
    assert old.db is not None and old.db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert [v.name for v in old.claiming([8080, 81])] == ["a", "b"]
    assert old.claiming([80]) == []


def test_a_forked_child_does_not_share_the_parents_lock(tmp_path):
    """Found by review: a forked child locked through the parent's open file description, so
    parent and child held the lock at once. Now the child opens its own descriptor."""
    import os

    from fireroute.errors import Busy
    from fireroute.state.store import Store

    store = Store(tmp_path / "state.db")
    with store.locked():  # the parent has opened (and cached) its lock descriptor
        pass
    held, go = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the child takes the lock, says so, and keeps it until told
        with Store(tmp_path / "state.db").locked(timeout=5):
            os.write(held[1], b"x")
            os.read(go[0], 1)
        os._exit(0)
    os.read(held[0], 1)
    try:
        with pytest.raises(Busy), store.locked(timeout=0):  # the child holds it: wait
            pass
    finally:
        os.write(go[1], b"x")
        os.waitpid(pid, 0)
    with store.locked(timeout=5):  # the control: once the child is done, the parent gets it
        pass


def test_locking_a_file_again_opens_no_new_descriptor(tmp_path):
    """Found by the property test run as nobody (issue 23): each lock of a file the process
    had locked before opened a descriptor and kept it, so a long-lived process (serve, the
    api in-process) ran out of them (1024 for a user) and every verb then failed "Too many
    open files". Now the file's descriptor is reused, through another path too; and the lock
    it takes still excludes another process (the control)."""
    import os

    (tmp_path / "link.db").symlink_to(tmp_path / "state.db")
    store, other = Store(tmp_path / "state.db"), Store(tmp_path / "link.db")
    with store.locked():
        pass
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        for s in (store, other):
            with s.locked():
                pass
    assert len(os.listdir("/proc/self/fd")) == before
    with store.locked():
        pid = os.fork()
        if pid == 0:  # another process: the lock is held
            code = 1
            try:
                with Store(tmp_path / "link.db").locked(timeout=0):
                    pass
            except Busy:
                code = 0
            os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


VMS4 = VMS.replace(",\n    net6_start TEXT,\n    net6_end TEXT\n", "\n")
INDEXES4 = INDEXES.replace(f", {SHAPE6}", "")
assert VMS4 != VMS and INDEXES4 != INDEXES
"""the vms table and indexes of schema 4: no IPv6 columns"""
OLD_VMS = VMS4.replace("netns TEXT,", "netns TEXT UNIQUE,")
assert OLD_VMS != VMS4
"""the vms table of schemas 1 to 3: one lease per namespace"""


def attachment(name: str, ordinal: int, ifname: str, tap: str | None = None) -> Vm:
    o = Options(mode="cni", netns="/run/netns/pod", container="c1", ifname=ifname,
                network=f"net-{ifname}", tap=tap)  # fmt: skip
    net = addressing.block(POOL, 30, ordinal)
    return Vm(name, net, f"frc-{name}", f"06:00:00:00:00:0{ordinal}", "eth0", o)


def as_schema(path, version: int) -> None:
    """Rewrite a current file as schema ``version`` (3 or 2) had it: netns UNIQUE."""
    import sqlite3

    db = sqlite3.connect(path)
    db.executescript(
        "DROP INDEX vms_netns_ifname; DROP INDEX vms_netns_tap; DROP INDEX vms_netns;"
        f"ALTER TABLE vms RENAME TO new; {OLD_VMS}"
        f"INSERT INTO vms SELECT {COLUMNS} FROM new; DROP TABLE new;"
        + INDEXES4
        + ("DROP TABLE ports;" if version < 3 else "")
        + f"PRAGMA user_version = {version};"
    )
    db.close()


@pytest.mark.parametrize("version", [3, 2])
def test_an_old_file_upgrades_to_several_attachments_per_namespace(tmp_path, version) -> None:
    import sqlite3

    path = tmp_path / "s.db"
    Store(path).reserve([attachment("a", 0, "eth0"), publishing("p", 2, "8080:80")])
    as_schema(path, version)
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="vms.netns"):  # the old file's limit
        db.execute("INSERT INTO vms SELECT 'b', state, 4, 7, prefix, 'frc-b', mac, uplink, "
                   "options, netns, created FROM vms WHERE name = 'a'")  # fmt: skip
    db.close()
    store = Store(path)
    assert store.db is not None
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert [v.name for v in store.all()] == ["a", "p"]  # every lease kept, as it was
    assert store.get("a").options == attachment("a", 0, "eth0").options  # type: ignore[union-attr]
    assert [v.name for v in store.claiming([8080])] == ["p"]
    store.reserve([attachment("b", 1, "eth1", tap="tap1")])  # a second NIC in the namespace
    assert [v.name for v in store.in_netns("/run/netns/pod")] == ["a", "b"]
    plan = store.db.execute("EXPLAIN QUERY PLAN SELECT name FROM vms WHERE netns = 'x'")
    assert "vms_netns" in " ".join(str(r) for r in plan.fetchall())


@pytest.mark.parametrize(
    "ifname,tap,index",
    [("eth0", "tap2", "vms_netns_ifname"), ("eth2", None, "vms_netns_tap")],
)
def test_the_state_file_refuses_one_name_twice_in_a_namespace(tmp_path, ifname, tap, index):
    """The second guard, behind the manager's check: one ifname, one tap per namespace."""
    from fireroute.errors import ConflictError

    store = Store(tmp_path / "s.db")
    store.reserve([attachment("a", 0, "eth0")])
    store.reserve([attachment("b", 1, "eth1", tap="tap1")])  # the positive control
    with pytest.raises(ConflictError, match=index):
        store.reserve([attachment("c", 2, ifname, tap=tap)])
    assert [v.name for v in store.all()] == ["a", "b"]


def test_a_failed_upgrade_to_4_leaves_the_old_table(tmp_path) -> None:
    import sqlite3

    from fireroute.errors import StateError

    path = tmp_path / "s.db"
    Store(path).reserve([attachment("a", 0, "eth0"), publishing("b", 1)])
    as_schema(path, 2)
    db = sqlite3.connect(path)
    db.execute("UPDATE vms SET options = '{\"publish\": 7}' WHERE name = 'b'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match='options of vm "b" are unreadable'):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # as it was, whole
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'vms'").fetchone()
    assert "netns TEXT UNIQUE" in sql
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert "vms_old" not in names and "vms_netns" not in names and "ports" not in names
    assert [r[0] for r in db.execute("SELECT name FROM vms ORDER BY name")] == ["a", "b"]
    db.close()
