"""Per-VM traffic, counted by the kernel, from the guest's point of view.

Every NAT and clone guest of the nft backend has an element in the NAT table's ``acct_tx`` and
``acct_rx`` sets (its host device), each element with its own counter; one rule looks every
packet from a guest's device up in ``acct_tx`` before anything can drop it (sent by the
guest: ``tx``), and every packet routed to it up in ``acct_rx`` (received: ``rx``), so a packet
is counted once whatever else matches it. Bytes are IP bytes (headers included, no Ethernet
header). A guest with IPv6 has the same two elements in the ip6 table of its table's name:
its figures are the sum of both families. Bridge guests and the iptables backend are not
counted: their rows say so (``counted`` false, figures null) rather than show zeros.
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
    tables: dict[tuple[str, str], tuple[dict, dict]] = {}
    for v in vms:
        for family in ("ip", "ip6") if v.net6 is not None else ("ip",):
            if counted(v) and (family, v.table) not in tables:
                tx = observe.nft_counters(v.table, "acct_tx", runner, family) or {}
                rx = observe.nft_counters(v.table, "acct_rx", runner, family) or {}
                tables[(family, v.table)] = (tx, rx)
    rows: list[dict[str, object]] = []
    for v in vms:
        row: dict[str, object] = {"name": v.name, "counted": counted(v)}
        key = by_set(elements(v))["acct_tx"][0] if counted(v) else None
        families = ("ip", "ip6") if v.net6 is not None else ("ip",)
        sources = [tables.get((f, v.table), ({}, {})) for f in families]
        if key is not None and all(key in tx and key in rx for tx, rx in sources):
            sums = [0, 0, 0, 0]
            for tx, rx in sources:
                (tp, tb), (rp, rb) = tx[key], rx[key]
                sums = [sums[0] + tb, sums[1] + tp, sums[2] + rb, sums[3] + rp]
            row.update(zip(KEYS, sums, strict=True))
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
