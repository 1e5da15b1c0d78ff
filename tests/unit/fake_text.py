"""The operations a plan step stands for, read from its text: an nft step's script (what the
kernel runs: a take-down declares the elements it deletes first, so that none is missing,
which its operations do not say), and a step without operations of its own (``up``'s
iptables rules before ``up`` was a diff, docs/core-migration.md step 15b). Only the shapes
fireroute writes are read; any other line is an error of the test (an AssertionError naming
it), never skipped.

nft: ``create|add table``, a ``table F T { ... }`` block declaring sets, maps and chains,
``flush chain``, ``add rule``, ``add|delete element``, ``delete table``. A chain declared
keeps its rules (as nft does) unless flushed; the fake sets a chain with its rules, so the
rules a chain ends the script with are worked out here. iptables: ``-A|-I|-D CHAIN spec``
under its table (the step's ``table``).
"""

from __future__ import annotations

import re

from fireroute.kernel.read import _netns_owner, _vm_of, rule_of
from fireroute.want.nft import NftElement
from fireroute.want.tables import TABLE_COMMENT, NftChain, NftSet, NftTable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.kernel.fake import Fake

ELEMENT = re.compile(r'\s*(.+?) comment "([^"]*)"( : [^,]+)?\s*(?:,|$)')


class Op:
    __slots__ = ("verb", "obj")

    def __init__(self, verb: str, obj: object) -> None:
        self.verb, self.obj = verb, obj

    def __repr__(self) -> str:
        return f"{self.verb} {self.obj!r}"


def table(family: str, name: str, ns: str | None = None) -> NftTable:
    """A table as kernel/read.py reads it: in a clone's namespace, owned by that namespace."""
    who = _netns_owner(ns) if ns is not None else TABLE_COMMENT
    return NftTable(family, name, "", who, _vm_of(who) if ns is not None else None, ns)


def nft_ops(script: str, fake: Fake, ns: str | None = None) -> list[Op]:
    """The operations of an nft script run in namespace ``ns``, in order (chains last, with
    their final rules)."""
    ops: list[Op] = []
    chains: dict[tuple[str, str, str], tuple[str, list[str]]] = {}

    def chain(f: str, t: str, c: str) -> tuple[str, list[str]]:
        if (f, t, c) not in chains:
            have = fake.objs.get(("nft chain", (ns, f, t, c)))
            chains[(f, t, c)] = (have.header, list(have.rules)) if have else ("", [])  # type: ignore[attr-defined]
        return chains[(f, t, c)]

    block: tuple[str, str] | None = None
    rules: list[str] | None = None  # inside a chain's block, its rules
    for line in script.splitlines():
        words = line.split()
        if not words:
            continue
        if rules is not None:  # inside ``chain C { header`` ... ``}``
            if words == ["}"]:
                rules = None
            else:
                rules.append(line.strip())
            continue
        if block is not None:  # inside ``table F T { ... }``
            if words == ["}"]:
                block = None
            elif words[0] in ("set", "map"):
                body = line.split("{", 1)[1].rsplit("}", 1)[0].strip()
                type_text = body.removeprefix("type ").rstrip(";").strip()
                found = NftSet(table(*block, ns), words[1], type_text, words[0] == "map")
                ops.append(Op("set", found))
            elif words[0] == "chain":
                header = line.split("{", 1)[1].strip()
                one_line = header.endswith("}")
                header = header.removesuffix("}").strip()
                have = chain(*block, words[1])
                chains[(*block, words[1])] = (header, have[1])
                if not one_line:  # its rules follow, declared with it
                    rules = chains[(*block, words[1])][1]
            else:
                assert words[0] == "comment", line
            continue
        head = " ".join(words[:2])
        if head in ("create table", "add table"):
            verb = "create" if words[0] == "create" else "set"
            ops.append(Op(verb, table(words[2], words[3], ns)))
        elif words[0] == "table" and words[-1] == "{":
            block = (words[1], words[2])
            ops.append(Op("set", table(*block, ns)))
        elif head == "flush chain":
            chain(words[2], words[3], words[4])[1].clear()
        elif head == "add rule":
            chain(words[2], words[3], words[4])[1].append(line.split(None, 5)[5])
        elif head in ("add element", "delete element"):
            ops += _elements(words[0], words[2], words[3], words[4], line)
        elif head == "delete table":
            ops.append(Op("delete", table(words[2], words[3], ns)))
        else:
            raise AssertionError(f"an nft line the fake cannot read: {line!r}")
    for (f, t, c), (header, held) in chains.items():
        ops.append(Op("set", NftChain(table(f, t, ns), c, header, tuple(held))))
    return ops


def _elements(verb: str, family: str, name: str, set_name: str, line: str) -> list[Op]:
    body = line.split("{", 1)[1].rsplit("}", 1)[0]
    out = []
    for m in ELEMENT.finditer(body):
        value = m.group(1) + (m.group(3) or "").rstrip()  # (a map's last: before its " }")
        tag = m.group(2)
        obj = NftElement(family, name, set_name, value, tag, _vm_of(tag))
        out.append(Op("delete" if verb == "delete" else "create", obj))
    assert out, f"no element in {line!r}"
    return out


def iptables_op(table_name: str, text: str) -> Op:
    """One rule line of an iptables-restore input, as iptables-nft-save shows it after."""
    flag, rest = text.split(" ", 1)
    assert flag in ("-A", "-I", "-D"), text
    rule = rule_of(table_name, f"-A {rest}")
    rule.insert = flag == "-I"
    return Op("delete" if flag == "-D" else "create", rule)
