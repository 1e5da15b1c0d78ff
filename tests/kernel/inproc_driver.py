"""Runs steps through Executor or InProcessExecutor, inside whatever network namespace it is
started in (tests/kernel/test_inproc.py starts it with ``nsenter --net``).

stdin: {"executor": "process"|"inproc", "verb": "all"|"best", "steps": [step, ...]} with a step
as {"tool", "text", "what", "vm", "exclusive", "undo": [step, ...]}; stdout: {"error": the
exception's type name or null, "message": its text, "in_process": groups run in-process}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from fireroute.errors import FirerouteError  # noqa: E402
from fireroute.kernel.apply import Executor  # noqa: E402
from fireroute.kernel.inproc import InProcessExecutor  # noqa: E402
from fireroute.plan.steps import Plan, Step  # noqa: E402


def step(d: dict) -> Step:
    return Step(
        d["tool"],
        d["text"],
        d["what"],
        d.get("vm"),
        undo=tuple(step(u) for u in d.get("undo", [])),
        exclusive=d.get("exclusive", False),
    )


def main() -> None:
    req = json.load(sys.stdin)
    ex = InProcessExecutor() if req["executor"] == "inproc" else Executor()
    plan = Plan([step(d) for d in req["steps"]])
    out: dict[str, object] = {"error": None, "message": "", "in_process": 0}
    try:
        if req["verb"] == "all":
            ex.apply_all(plan)
        else:
            ex.apply_best_effort(plan)
    except FirerouteError as exc:
        out["error"], out["message"] = type(exc).__name__, str(exc)
    out["in_process"] = getattr(ex, "in_process", 0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
