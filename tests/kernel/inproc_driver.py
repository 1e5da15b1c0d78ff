"""Runs steps through Executor or InProcessExecutor, inside whatever network namespace it is
started in (tests/kernel/test_inproc.py starts it with ``nsenter --net``).

stdin: {"executor": "process"|"inproc", "verb": "all"|"best", "steps": the pickled list of
steps, base64} (a step's operations, ``OpStep.ops``, go with it: the in-process executor
encodes them); stdout: {"error": the exception's type name or null, "message": its text,
"in_process": groups run in-process}.
"""

from __future__ import annotations

import base64
import json
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from fireroute.errors import FirerouteError  # noqa: E402
from fireroute.kernel.apply import Executor  # noqa: E402
from fireroute.kernel.inproc import InProcessExecutor  # noqa: E402
from fireroute.plan.steps import Plan  # noqa: E402


def main() -> None:
    req = json.load(sys.stdin)
    ex = InProcessExecutor() if req["executor"] == "inproc" else Executor()
    plan = Plan(pickle.loads(base64.b64decode(req["steps"])))  # (written by the test itself)
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
