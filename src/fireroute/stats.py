"""Per-VM traffic, counted by the kernel, from the guest's point of view.

Every NAT and clone guest of the nft backend has an element in the NAT table's ``acct_tx`` and
``acct_rx`` sets (its host device), each element with its own counter; one rule looks every
packet from a guest's device up in ``acct_tx`` before anything can drop it (sent by the
guest: ``tx``), and every packet routed to it up in ``acct_rx`` (received: ``rx``), so a packet
is counted once whatever else matches it. Bytes are IP bytes (headers included, no Ethernet
header). Bridge guests and the iptables backend are not counted: their rows say so
(``counted`` false, figures null) rather than show zeros.
"""

from __future__ import annotations

from fireroute.errors import NotFound
from fireroute.kernel import observe
from fireroute.kernel.run import run
from fireroute.want.nft import by_set, elements

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.kernel.run import Runner
    from fireroute.model import Vm

KEYS = ("tx_bytes", "tx_packets", "rx_bytes", "rx_packets")
HELP = {
    "tx_bytes": "IP bytes the guest sent",
    "tx_packets": "packets the guest sent",
    "rx_bytes": "IP bytes the guest received",
    "rx_packets": "packets the guest received",
}


def counted(vm: Vm) -> bool:
    return vm.backend == "nft" and "acct_tx" in by_set(elements(vm))


def read(
    vms: list[Vm], names: list[str] | None = None, runner: Runner = run
) -> list[dict[str, object]]:
    """One row per VM of ``vms`` (a state file's records: all, or ``names`` in that order;
    NotFound for an unknown one): ``name``, ``counted`` and the four counters (None where not
    counted)."""
    if names:
        by_name = {v.name: v for v in vms}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise NotFound(f'vm "{missing[0]}" is not known to this state file')
        vms = [by_name[n] for n in dict.fromkeys(names)]
    tables: dict[str, tuple[dict, dict]] = {}
    for table in sorted({v.table for v in vms if counted(v)}):
        tx = observe.nft_counters(table, "acct_tx", runner) or {}
        rx = observe.nft_counters(table, "acct_rx", runner) or {}
        tables[table] = (tx, rx)
    rows: list[dict[str, object]] = []
    for v in vms:
        row: dict[str, object] = {"name": v.name, "counted": counted(v)}
        key = by_set(elements(v))["acct_tx"][0] if counted(v) else None
        tx, rx = tables.get(v.table, ({}, {}))
        if key is not None and key in tx and key in rx:
            (tp, tb), (rp, rb) = tx[key], rx[key]
            row.update(tx_bytes=tb, tx_packets=tp, rx_bytes=rb, rx_packets=rp)
        else:  # not counted, or its counters are gone (drift: check says so): no zeros
            row.update(dict.fromkeys(KEYS))
        rows.append(row)
    return rows


def prometheus(rows: list[dict[str, object]]) -> str:
    """The text exposition format (node_exporter's textfile collector reads it)."""
    lines = []
    for key in KEYS:
        metric = f"fireroute_vm_{key}_total"
        lines += [f"# HELP {metric} {HELP[key]}.", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{vm="{r["name"]}"}} {r[key]}' for r in rows if r[key] is not None]
    return "\n".join(lines) + "\n"
