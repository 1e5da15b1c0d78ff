"""Pure layers never import the kernel layer, subprocess or sqlite3."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fireroute"
PURE = ["model.py", "addressing.py", "errors.py", "owner.py", "validate.py", "render", "plan"]
FORBIDDEN = {
    "subprocess",
    "sqlite3",
    "_sqlite3",
    "fireroute.kernel",
    "fireroute.state",
    "socket",
    "fireroute.manager",
    "fireroute.repair",
}


def imported(f: Path, node: ast.AST) -> list[str]:
    """The absolute names an import statement brings in: ``from fireroute import kernel``
    is fireroute.kernel, and a relative import is resolved against the file's package."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = list(f.relative_to(SRC.parent).with_suffix("").parts[:-1])
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    return [base] + [f"{base}.{a.name}" for a in node.names]


def modules(path: Path):
    if path.is_dir():
        yield from path.rglob("*.py")
    else:
        yield path


@pytest.mark.parametrize("part", PURE)
def test_pure_layer_imports(part):
    for f in modules(SRC / part):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            for n in imported(f, node):
                assert not any(n == b or n.startswith(b + ".") for b in FORBIDDEN), (
                    f"{f.relative_to(SRC)} imports {n}"
                )


@pytest.mark.parametrize(
    "line",
    ["from fireroute import kernel", "from ..kernel import run", "import subprocess"],
)
def test_the_check_sees_every_spelling(line):
    """The negative control: each spelling of a forbidden import is caught."""
    f = SRC / "plan" / "bridge.py"
    node = ast.parse(line).body[0]
    assert any(n == b or n.startswith(b + ".") for n in imported(f, node) for b in FORBIDDEN), line
