"""Pure layers never import the kernel layer, subprocess or sqlite3."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fireroute"
PURE = ["model.py", "addressing.py", "errors.py", "render", "plan"]
FORBIDDEN = {"subprocess", "sqlite3", "fireroute.kernel", "fireroute.state", "socket"}


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
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert not any(n == b or n.startswith(b + ".") for b in FORBIDDEN), (
                    f"{f.relative_to(SRC)} imports {n}"
                )
