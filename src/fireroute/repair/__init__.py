"""Make state and kernel agree. From the state file alone, want/render.py renders everything
its VMs need on the host (links in every namespace of ours, addresses, routes, sysctls, the
nft tables' sets, chains and elements, iptables rules, forwarding); kernel/read.py reads the
same objects back, and plan/diff.py compares the two. ``check`` reports every difference,
per VM, per shared object, and the orphans (objects tagged for this state file that no lease
accounts for), and what our tables hold that no lease asks for whatever its tag (an element
keyed on one of its VMs, or nobody's); ``restore`` applies the missing part and removes that;
``gc`` removes the orphans and finishes or undoes half-made VMs. Another state file's
objects, carrying its tag and keyed on none of this one's VMs, are never removed; shared ones
(a table, the shared iptables rule, forwarding) only when no other state file's objects use
them.

The package: ``picture`` (the kernel read and what the leases want, the two sides of the
one diff), ``report`` (check: the diff in words, grouped), ``heal`` (restore: the diff
compiled into steps), ``collect`` (gc: what no lease wants), ``order`` (restore's writing of
the iptables backend's rules in place), ``verbs`` (check, gc, restore).
"""

from fireroute.kernel.read import parse_chains
from fireroute.repair.report import Report
from fireroute.repair.verbs import check, gc, gone, restore

__all__ = ["Report", "check", "gc", "gone", "parse_chains", "restore"]
