"""No function outside lab/ is more complex than 25 (radon's cyclomatic complexity): a verb
that grows past it is split by what it decides, not left to grow (issue 23)."""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_visit

SRC = Path(__file__).resolve().parents[2] / "src" / "fireroute"
LIMIT = 25


def blocks(path: Path) -> list[tuple[str, int]]:
    """(where, complexity) of every function and method (radon lists the methods beside
    their class; a class itself is not a block)."""
    where = path.relative_to(SRC)
    return [
        (f"{where}:{f.lineno} {f.fullname}", f.complexity)
        for f in cc_visit(path.read_text())
        if not hasattr(f, "methods")
    ]


def test_no_function_outside_lab_is_more_complex_than_the_limit():
    files = [p for p in SRC.rglob("*.py") if "lab" not in p.relative_to(SRC).parts]
    assert len(files) > 50  # the package, not an empty match
    over = [(name, cc) for p in files for name, cc in blocks(p) if cc > LIMIT]
    assert over == []


def test_the_measure_sees_a_complex_function():
    """Control: a function of 26 branches is found."""
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(LIMIT + 1))
    (found,) = cc_visit(f"def f(x):\n{body}    return -1\n")
    assert found.complexity > LIMIT
