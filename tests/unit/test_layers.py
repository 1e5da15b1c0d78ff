"""Pure layers never import the kernel layer, subprocess or sqlite3."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fireroute"
PURE = [
    "model.py",
    "addressing.py",
    "errors.py",
    "owner.py",
    "validate.py",
    "named.py",
    "request.py",
    "render",
    "plan",
    "want",
]
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


def test_want_is_below_plan():
    """The wanted objects are what plans render: want/ never imports plan/ (or a door)."""
    for f in modules(SRC / "want"):
        for node in ast.walk(ast.parse(f.read_text())):
            for n in imported(f, node):
                assert not n.startswith(("fireroute.plan", "fireroute.cli", "fireroute.serve")), (
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


def import_graph() -> dict[str, set[str]]:
    """module -> the fireroute modules it imports (anywhere in it: lazy imports count)."""
    graph: dict[str, set[str]] = {}
    for f in SRC.rglob("*.py"):
        name = ".".join(f.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            for n in imported(f, node):
                while n.startswith("fireroute") and n not in MODULES:
                    n = n.rpartition(".")[0]  # "fireroute.plan.nft.vms_up" -> the module
                if n.startswith("fireroute") and n != name:
                    found.add(n)
        graph[name] = found
    return graph


MODULES = {
    ".".join(f.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
    for f in SRC.rglob("*.py")
}
DOORS = ("fireroute.cli", "fireroute.serve")
FRONT = ("fireroute.__main__", "fireroute.entry")  # the program: picks the door, nothing else


def door(module: str) -> str | None:
    return next((d for d in DOORS if module == d or module.startswith(d + ".")), None)


def test_doors_hold_no_one_up():
    """No core module imports a door, and no door imports another door."""
    for module, deps in import_graph().items():
        for dep in deps:
            if door(dep) and door(dep) != door(module) and module not in FRONT:
                raise AssertionError(f"{module} imports the door {dep}")


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of modules that imports its own start (a package importing its submodules
    aside), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for dep in sorted(graph.get(m, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep]
                if not all(c.startswith(cycle[0]) for c in cycle):
                    return cycle
            elif state.get(dep) is None and (found := visit(dep, [*path, dep])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if state.get(m) is None and (found := visit(m, [m])):
            return found
    return None


def test_no_import_circle_between_modules():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_check_sees_a_circle():
    """Positive control: a circle through three modules is found; a package importing its
    own submodule is not one."""
    graph = {"fireroute.a": {"fireroute.b"}, "fireroute.b": {"fireroute.c"}}
    assert find_circle(graph) is None
    graph["fireroute.c"] = {"fireroute.a"}
    assert find_circle(graph) == ["fireroute.a", "fireroute.b", "fireroute.c", "fireroute.a"]
    assert find_circle({"fireroute.p": {"fireroute.p.x"}, "fireroute.p.x": {"fireroute.p"}}) is None


ABOVE_ALLOCATE = ("fireroute.manager", "fireroute.repair", "fireroute.api", *DOORS)


def test_allocate_is_below_the_verbs():
    """allocate.py (up's admission and allocation checks) is called by manager.py and never
    calls back up: no import of the verbs, repair, the API or a door, lazy ones included."""
    deps = import_graph()["fireroute.allocate"]
    assert "fireroute.kernel.observe" in deps  # the graph does see its imports
    up = sorted(d for d in deps if any(d == b or d.startswith(b + ".") for b in ABOVE_ALLOCATE))
    assert up == [], f"allocate.py imports {up}"


def heavy(statement: str) -> list[str]:
    """The heavy modules (re, json, subprocess, sqlite3) a fresh interpreter without site
    has loaded after ``statement``."""
    code = (
        f"import sys; sys.path.insert(0, sys.argv[1]); {statement}; "
        "print(' '.join(sorted({'re', 'json', 'subprocess', 'sqlite3'} & set(sys.modules))))"
    )
    p = subprocess.run(
        [sys.executable, "-S", "-c", code, str(SRC.parent)], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_allocate_stays_lean():
    """The per-VM up path loads allocate.py: it brings in none of the heavy modules; the
    probe does see one when it is loaded (positive control)."""
    assert heavy("import fireroute.allocate") == []
    assert heavy("import fireroute.allocate, re") == ["re"]


# -- one core API (issue 23): every door calls fireroute.Host, no module reaches into another's
# private names

CALLERS_OF_THE_CORE = ("fireroute.cli", "fireroute.cni", "fireroute.serve", "fireroute.firecracker")
BELOW_THE_CORE = ("fireroute.manager", "fireroute.repair")


def test_the_doors_call_the_core_only():
    """The CLI, the CNI plugin, the daemon and the Firecracker verbs reach the verbs through
    fireroute.Host (api.py): none imports manager.py or repair/ (lazy imports count)."""
    graph = import_graph()
    assert "fireroute.manager" in graph["fireroute.api"]  # the graph sees the core's own import
    found = sorted(
        f"{module} imports {dep}"
        for module, deps in graph.items()
        if module.startswith(CALLERS_OF_THE_CORE)
        for dep in deps
        if any(dep == b or dep.startswith(b + ".") for b in BELOW_THE_CORE)
    )
    assert found == []


PRIVATE_EXEMPT = {
    # repair/ is being rewritten by another helper (issue 23, steps 8-14, which delete it):
    # its verbs.py reads Manager's _store and _down_plan until then
    "repair",
}
STDLIB_PRIVATE: set[tuple[str, str]] = set()
"""(module, name) pairs of the standard library's private names a module may use, such as
("sys", "_getframe"); none is used today"""


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_privates(tree: ast.AST) -> set[str]:
    """The private names a module defines: its functions, classes and methods, what it assigns
    (``self._x = ...`` too) and its ``__slots__``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            names |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return {n for n in names if isinstance(n, str) and _private(n)}


def foreign_privates(tree: ast.AST) -> list[tuple[int, str]]:
    """``x._name`` where ``_name`` is private and not this module's own: x is not self, cls
    or super() (a subclass's use of its base's hooks), and this module defines no ``_name``
    (so the object is another module's)."""
    own = defined_privates(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr) or node.attr in own:
            continue
        x = node.value
        if isinstance(x, ast.Name) and (
            x.id in ("self", "cls") or (x.id, node.attr) in STDLIB_PRIVATE
        ):
            continue
        if isinstance(x, ast.Call) and isinstance(x.func, ast.Name) and x.func.id == "super":
            continue
        found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_reaches_into_another_modules_privates():
    found = []
    for f in sorted(SRC.rglob("*.py")):
        if f.relative_to(SRC).parts[0] in PRIVATE_EXEMPT:
            continue
        found += [
            f"{f.relative_to(SRC)}:{n}: {text}"
            for n, text in foreign_privates(ast.parse(f.read_text()))
        ]
    assert found == []


def test_the_private_check_sees_a_foreign_private():
    """Negative control: a record's private field read from outside is caught; the module's
    own, self's, cls's, super()'s and a dunder are not."""
    caught = foreign_privates(ast.parse("def f(vm):\n    return vm._record\n"))
    assert caught == [(2, "vm._record")]
    allowed = """
class A(B):
    __slots__ = ("_x",)
    def _hook(self):
        return self._y, cls._z, super()._base(), A._hook, other._x, vm.__dict__
"""
    assert foreign_privates(ast.parse(allowed)) == []


# -- the hand-off to the daemon (issue 25): a per-VM call through fireroute serve loads only what
# sending it and printing the answer need

LEAN_ABSENT = ("fireroute.api", "fireroute.manager", "fireroute.state", "fireroute.kernel")
HEAVY = ("re", "json", "subprocess", "sqlite3", "socket", "http.client")


def program_modules(argv: list[str], env: dict[str, str], stdin: str = "") -> tuple[int, set[str]]:
    """The ``fireroute`` program run as the launcher runs it (``python3 -S``): its exit status
    and the modules it had loaded at the end (the heavy ones and fireroute's own)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from fireroute.entry import main; "
        "rc = main(sys.argv[2:]); sys.stdout.flush(); "
        "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(m for m in sys.modules "
        "if m.startswith('fireroute') or m in HEAVY))); sys.exit(rc)"
    ).replace("HEAVY", repr(HEAVY))
    p = subprocess.run(
        [sys.executable, "-S", "-c", code, str(SRC.parent), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
    )
    return p.returncode, set(p.stderr.rpartition("\nMODULES ")[2].split())


def test_the_cli_handoff_stays_lean(tmp_path):
    """``up`` handed to a daemon (here one that is down: the request is built and the
    connection tried) loads neither the state file, the core nor the kernel layer, nor a
    heavy module; the same command in-process does (positive control)."""
    gone = str(tmp_path / "nobody.sock")
    rc, mods = program_modules(["up", "a"], {"FIREROUTE_SOCKET": gone})
    assert rc == 75 and "fireroute.handoff" in mods, mods
    assert {m for m in mods if m.startswith(LEAN_ABSENT) or m in HEAVY} == set(), mods
    state = {"FIREROUTE_STATE": str(tmp_path / "state.db")}
    rc, mods = program_modules(["down", "a"], state)
    assert rc == 0 and {"fireroute.api", "fireroute.state.store"} <= mods, mods


def test_the_cni_handoff_stays_lean(tmp_path):
    """A CNI call whose configuration names ``daemonSocket`` loads the program's entry, the
    hand-off and JSON text only: not even the plugin's protocol; without it, the plugin does."""
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    gone = str(tmp_path / "nobody.sock")
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "fireroute", "daemonSocket": gone}
    rc, mods = program_modules([], env, json.dumps(conf))
    assert rc == 1 and mods == {
        "fireroute",
        "fireroute.entry",
        "fireroute.cni",
        "fireroute.handoff",
        "fireroute.jsontext",
        "fireroute.errors",
    }, mods
    del conf["daemonSocket"]
    rc, mods = program_modules(
        [], {**env, "FIREROUTE_STATE": str(tmp_path / "s.db")}, json.dumps(conf)
    )
    assert "fireroute.cni.protocol" in mods and "fireroute.cni.plugin" in mods, mods


def test_the_cni_handoff_leaves_a_too_deep_configuration_to_the_plugin(tmp_path):
    """A configuration naming ``daemonSocket`` but nested deeper than the JSON reader goes is
    the plugin's code 7, one JSON answer and no traceback (found by the fuzzer of
    tests/cni/test_plugin.py); a shallow one is the hand-off's (the control)."""
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    deep = '{"cniVersion": "1.1.0", "daemonSocket": ' + "[" * 5000 + "]" * 5000 + "}"
    p = subprocess.run(
        [sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from fireroute.entry import main; sys.exit(main([]))", str(SRC.parent)],
        input=deep, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert (p.returncode, p.stderr) == (1, "") and json.loads(p.stdout)["code"] == 7, p
    gone = str(tmp_path / "nobody.sock")
    rc, mods = program_modules([], env, json.dumps({"cniVersion": "1.1.0", "daemonSocket": gone}))
    assert rc == 1 and "fireroute.cni.plugin" not in mods
