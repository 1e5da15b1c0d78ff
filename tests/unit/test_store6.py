"""The state file's IPv6 part (issue 24, docs/ipv6-plan.md 1.2, step 3): schema 5's
net6_start/net6_end (hex text, a unique index), an older file upgraded on use and read as it is
when it may not be written, the file's own ULA pool recorded once by the reservation that first
takes a block from it, and the allocation of /64s lowest-first over this file's v6 leases."""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Network, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute import addressing, allocate, jsontext
from fireroute.errors import ConflictError, PoolExhausted
from fireroute.model import Options, Vm
from fireroute.state.store import COLUMNS, FREE6_FROM, POOL6, SCHEMA_VERSION, Store
from tests.unit.test_store import INDEXES4, VMS4, as_schema
from tests.unit.test_up_decisions import host  # noqa: F401 - the fixture

POOL4 = IPv4Network("172.16.0.0/24")
POOL6_60 = IPv6Network("2001:db8:0:10::/60")  # 16 blocks: exhaustion within reach
MAC = "06:00:00:00:00:01"


def v4(name: str, ordinal: int) -> Vm:
    return Vm(name, addressing.block(POOL4, 30, ordinal), f"t-{name}", MAC, "eth0", Options())


def v6(name: str, ordinal: int, pool6: IPv6Network | None = None, pool: IPv6Network = POOL6_60):
    o = Options(ipv6=True, pool6=pool6)
    net6 = addressing.block6(pool, ordinal)
    return Vm(name, addressing.block(POOL4, 30, ordinal), f"t-{name}", MAC, "eth0", o, net6=net6)


def take(store: Store, name: str, options: Options, ordinal4: int) -> Vm:
    """What up does for one VM: its /64 allocated, then the reservation."""
    (net6,) = allocate.networks6(store, 1, options)
    net = addressing.block(POOL4, 30, ordinal4)
    vm = Vm(name, net, f"t-{name}", MAC, "eth0", options, "pending", net6)
    store.reserve([vm])
    return vm


def as_schema4(path) -> None:
    """Rewrite a current file as schema 4 had it: no IPv6 columns, their indexes, the shape
    index without its ipv6 column."""
    db = sqlite3.connect(path)
    db.executescript(
        "ALTER TABLE vms RENAME TO new; DROP INDEX vms_shape; DROP INDEX vms_end;"
        f"{VMS4} INSERT INTO vms SELECT {COLUMNS} FROM new; DROP TABLE new;"
        + INDEXES4
        + "CREATE INDEX vms_netns ON vms(netns);"
        + "PRAGMA user_version = 4;"
    )
    db.close()


def columns(path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[1] for r in db.execute("PRAGMA table_info(vms)")]
    finally:
        db.close()


def raw(path, name: str) -> tuple:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT {COLUMNS}, net6_start, net6_end FROM vms WHERE name = ?",
                          (name,)).fetchone()  # fmt: skip
    finally:
        db.close()


@pytest.mark.parametrize("version", [4, 3, 2])
def test_an_old_file_gets_the_v6_columns_and_reads_its_rows_as_v4_only(tmp_path, version):
    path = tmp_path / "s.db"
    Store(path).reserve([v4("a", 0), v4("b", 1)])
    (as_schema4 if version == 4 else lambda p: as_schema(p, version))(path)
    assert "net6_start" not in columns(path)  # the old file as it was
    store = Store(path)
    assert store.version == SCHEMA_VERSION == 5
    assert columns(path)[-2:] == ["net6_start", "net6_end"]
    assert [(v.name, v.net, v.net6) for v in store.all()] == [
        ("a", addressing.block(POOL4, 30, 0), None),
        ("b", addressing.block(POOL4, 30, 1), None),
    ]
    assert store.taken6_from(0, (1 << 128) - 1) == []
    db = store.db
    assert db is not None
    (shape,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'vms_shape'").fetchone()
    assert "'$.ipv6'" in shape  # made again with its ipv6 column
    plan = db.execute("EXPLAIN QUERY PLAN SELECT name FROM vms WHERE net6_start = 'x'")
    assert "vms_net6" in " ".join(str(r) for r in plan.fetchall())
    store.reserve([v6("c", 2, POOL6_60)])  # the upgraded file takes a v6 lease; its index
    twin = Vm(
        "d", None, "t-d", MAC, "eth0", Options(ipv6=True, pool6=POOL6_60), net6=v6("c", 2).net6
    )
    with pytest.raises(ConflictError, match="net6_start"):  # refuses a second one of the block
        store.reserve([twin])
    assert Store(path).get("c").net6 == addressing.block6(POOL6_60, 2)  # type: ignore[union-attr]


def test_an_old_file_it_may_not_write_is_read_as_it_is(tmp_path, monkeypatch):
    import os

    path = tmp_path / "s.db"
    Store(path).reserve([v4("a", 0)])
    as_schema4(path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    old = Store(path, create=False)
    assert old.version == 4
    assert [(v.name, v.net6) for v in old.all()] == [("a", None)]
    assert old.get("a") is not None and old.taken6_from(0, (1 << 128) - 1) == []
    assert "net6_start" not in columns(path) and path.read_bytes() == before
    monkeypatch.undo()  # the control: a writable open upgrades the same file
    assert Store(path).version == 5 and "net6_start" in columns(path)


def test_a_v6_vm_round_trips(tmp_path):
    path = tmp_path / "s.db"
    vm = v6("a", 5, pool6=POOL6_60)
    Store(path).reserve([v4("x", 9), vm])  # one batch of both kinds: each row its own
    assert Store(path).get("x").net6 is None and raw(path, "x")[-2:] == (None, None)  # type: ignore[union-attr]
    back = Store(path).get("a")
    assert back is not None
    assert back.net6 == vm.net6 == IPv6Network("2001:db8:0:15::/64")
    assert str(back.guest6) == "2001:db8:0:15::2/64" and back.options == vm.options
    start, end = raw(path, "a")[-2:]  # 32 hex digits each: text that sorts like the numbers
    assert (start, end) == ("20010db8000000150000000000000000", "20010db800000015ffffffffffffffff")


def test_a_v4_only_reservation_writes_the_row_it_wrote_before(tmp_path):
    """Positive control of "without --ipv6 nothing changes": every column as schema 4 wrote
    it (the options text has no ipv6 key), the new ones NULL, no pool recorded."""
    path = tmp_path / "s.db"
    Store(path).reserve([v4("a", 2)])
    row = raw(path, "a")
    text = jsontext.dumps(Options().identity())
    assert "ipv6" not in text
    assert row[:10] == ("a", "pending", 0xAC100008, 0xAC10000B, 30, "t-a", MAC, "eth0", text, None)
    assert row[-2:] == (None, None)
    assert Store(path).meta(POOL6) is None


def test_two_vms_never_share_a_block(tmp_path):
    path = tmp_path / "s.db"
    store = Store(path)
    store.reserve([v4("x", 9), v4("y", 10)])  # v4-only rows: NULLs, which the index allows
    store.reserve([v6("a", 0, POOL6_60), v6("b", 1, POOL6_60)])  # the control: two blocks
    twin = v6("c", 1, POOL6_60)
    twin.net = addressing.block(POOL4, 30, 20)
    with pytest.raises(ConflictError, match="net6_start"):
        store.reserve([twin])
    assert [v.name for v in store.all()] == ["a", "b", "x", "y"]
    db = sqlite3.connect(path)  # the index itself, past the store's code
    with pytest.raises(sqlite3.IntegrityError, match="vms.net6_start"):
        db.execute(
            "INSERT INTO vms SELECT 'd', state, 99, 99, prefix, 'tap-d', mac, uplink, "
            "options, netns, created, net6_start, net6_end FROM vms WHERE name = 'b'"
        )
    db.close()


def test_the_lowest_free_block_is_taken_again_after_a_removal(tmp_path):
    store = Store(tmp_path / "s.db")
    o = Options(ipv6=True, pool6=POOL6_60)
    for i in range(5):
        assert take(store, f"v{i}", o, i).net6 == addressing.block6(POOL6_60, i)
    key = f"{FREE6_FROM}{addressing.hex_key(int(POOL6_60.network_address))}"
    assert store.meta(key) == addressing.hex_key(int(addressing.block6(POOL6_60, 4)[0]))
    store.remove(["v1", "v3"])
    assert store.meta(key) == addressing.hex_key(int(addressing.block6(POOL6_60, 1)[0]))
    assert take(store, "again", o, 10).net6 == addressing.block6(POOL6_60, 1)
    got = allocate.networks6(store, 2, o)
    assert got == [addressing.block6(POOL6_60, 3), addressing.block6(POOL6_60, 5)]


def lowest_free(store: Store, pool: IPv6Network) -> int:
    leased = {int(n.network_address) for n in (v.net6 for v in store.all()) if n is not None}
    blocks = [addressing.block6(pool, o) for o in range(addressing.block6_count(pool))]
    return next(o for o, b in enumerate(blocks) if int(b.network_address) not in leased)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=60))
def test_the_mark_never_hides_a_free_block(tmp_path_factory, ops) -> None:
    store = Store(tmp_path_factory.mktemp("marks6") / "s.db")
    o = Options(ipv6=True, pool6=POOL6_60)
    names: list[str] = []
    for k, (add, pick) in enumerate(ops):
        if add or not names:
            if len(names) == addressing.block6_count(POOL6_60):
                with pytest.raises(PoolExhausted):
                    allocate.networks6(store, 1, o)
                continue
            want = lowest_free(store, POOL6_60)
            assert take(store, f"v{k}", o, k).net6 == addressing.block6(POOL6_60, want)
            names.append(f"v{k}")
        else:
            store.remove([names.pop(pick % len(names))])


def test_the_files_own_pool_is_made_once(tmp_path):
    path = tmp_path / "s.db"
    store = Store(path)
    o = Options(ipv6=True)
    first = take(store, "a", o, 0)
    pool = IPv6Network(str(store.meta(POOL6)))
    assert pool.prefixlen == 48 and pool.network_address.packed[0] == 0xFD  # a ULA /48
    assert first.net6 == addressing.block6(pool, 0)
    again = Store(path)  # reopened: the same pool, the next block of it
    assert again.own_pool6() == pool
    assert take(again, "b", o, 1).net6 == addressing.block6(pool, 1)
    assert again.meta(POOL6) == str(pool)
    assert [v.net6 for v in Store(path).all()] == [addressing.block6(pool, i) for i in (0, 1)]


def test_a_pool_is_recorded_only_by_a_vm_that_takes_a_block_from_it(tmp_path):
    """A v4-only file never gets one, nor does one whose v6 VMs name their --pool6; the
    control: the first VM of the own pool records it."""
    path = tmp_path / "s.db"
    store = Store(path)
    store.reserve([v4("a", 0)])
    take(store, "b", Options(ipv6=True, pool6=POOL6_60), 1)
    assert Store(path).meta(POOL6) is None
    take(store, "c", Options(ipv6=True), 2)
    assert Store(path).meta(POOL6) is not None


def test_two_first_reservations_agree_on_the_pool(tmp_path, monkeypatch):
    """Two stores of one file each draft a pool before either records one (up holds the state
    lock across allocation and reservation, so only callers that do not can race): the first
    reservation records its pool, the second is refused whole; allocated again, it takes the
    recorded pool."""
    import os

    path = tmp_path / "s.db"
    one, two = Store(path), Store(path)
    draws = iter([b"\x01" * 5, b"\x02" * 5])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws) if n == 5 else b"\0" * n)
    o = Options(ipv6=True)
    (mine,) = allocate.networks6(one, 1, o)
    (theirs,) = allocate.networks6(two, 1, o)
    assert one.own_pool6() != two.own_pool6()
    one.reserve([Vm("a", None, "t-a", MAC, "eth0", o, "pending", mine)])
    with pytest.raises(ConflictError, match="not in the state file's IPv6 pool"):
        two.reserve([Vm("b", None, "t-b", MAC, "eth0", o, "pending", theirs)])
    assert [v.name for v in Store(path).all()] == ["a"]
    assert Store(path).meta(POOL6) == str(one.own_pool6())
    (retry,) = allocate.networks6(two, 1, o)  # the control: allocated again, it fits
    two.reserve([Vm("b", None, "t-b", MAC, "eth0", o, "pending", retry)])
    assert retry == addressing.block6(one.own_pool6(), 1)


def test_a_file_that_says_5_without_the_v6_columns_is_refused(tmp_path):
    """One line naming the state file, the file left as it was; the control: the same file
    saying 4 is upgraded."""
    from fireroute.errors import StateError

    path = tmp_path / "s.db"
    Store(path).reserve([v4("a", 0)])
    as_schema4(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 5")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="cannot use state file .*net6_start"):
        Store(path)
    assert path.read_bytes() == before
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 4")
    db.close()
    assert Store(path).get("a") is not None and "net6_start" in columns(path)


def test_up_allocation_gives_v6_vms_their_blocks_and_v4_ones_none(host):  # noqa: F811
    """allocate.new_vms, as up calls it (validate.up refuses --ipv6 until plan step 7): a
    dual-stack batch gets the lowest /64s of the file's own pool, a v4-only request none (and
    reads nothing of IPv6: no pool is drafted)."""
    m = host("alloc")
    store = m._store()
    plain, _view, _shape = allocate.new_vms(store, m.runner, ["p"], Options(), False, None)
    assert [v.net6 for v in plain] == [None] and store._pool6 is None
    assert not [k for k in store._marks if k.startswith(FREE6_FROM)]
    store.reserve(plain)
    dual = Options(ipv6=True)
    vms, _view, _shape = allocate.new_vms(store, m.runner, ["a", "b"], dual, False, None)
    store.reserve(vms)
    pool = IPv6Network(str(store.meta(POOL6)))
    assert [v.net6 for v in vms] == [addressing.block6(pool, 0), addressing.block6(pool, 1)]
    assert [v.net for v in vms] == [addressing.block(dual.pool, 30, o) for o in (1, 2)]
    assert {v.name: v.net6 for v in Store(store.path).all()} == {
        "p": None,
        "a": vms[0].net6,
        "b": vms[1].net6,
    }


def test_the_shape_index_counts_dual_stack_vms_apart(tmp_path):
    """vms_shape's last column (SHAPE6): a count per shape with it reads the index (what
    ``Store.shapes`` gives ``Population``), v4-only rows NULL there."""
    from fireroute.state.store import SHAPE, SHAPE6

    store = Store(tmp_path / "s.db")
    store.reserve([v4("a", 0), v4("b", 1), v6("c", 2, POOL6_60)])
    db = store.db
    assert db is not None
    group = ", ".join(str(i) for i in range(1, 9))
    sql = f"SELECT {', '.join(SHAPE)}, uplink, {SHAPE6}, COUNT(*) FROM vms GROUP BY {group}"
    assert {r[-2]: r[-1] for r in db.execute(sql)} == {None: 2, 1: 1}
    plan = " ".join(str(r) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
    assert "vms_shape" in plan
    assert {r[-2]: r[-1] for r in store.shapes()} == {None: 2, 1: 1}  # shapes() is it


@pytest.mark.parametrize("start,end", [("nothex", "ff"), ("0" * 31 + "1", "f" * 32)])
def test_a_damaged_v6_lease_is_named_in_one_line(tmp_path, start, end):
    """Text that is not hex, or a range that is not a block: StateError naming the VM; the
    control, the VM beside it, reads."""
    from fireroute.errors import StateError

    path = tmp_path / "s.db"
    Store(path).reserve([v6("a", 0, POOL6_60), v6("b", 1, POOL6_60)])
    db = sqlite3.connect(path)
    db.execute("UPDATE vms SET net6_start = ?, net6_end = ? WHERE name = 'a'", (start, end))
    db.commit()
    db.close()
    with pytest.raises(StateError, match='state of vm "a" is unreadable'):
        Store(path).get("a")
    assert Store(path).get("b").net6 == addressing.block6(POOL6_60, 1)  # type: ignore[union-attr]
