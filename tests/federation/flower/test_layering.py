"""The Flower wing is transport only: no algorithm imports, no import cycles, flwr on demand."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import distdd_nas

PACKAGE = Path(distdd_nas.__file__).resolve().parent
FLOWER = PACKAGE / "federation" / "flower"
#: What transport code must never import (algorithms and stages go by "module:attr" strings).
FORBIDDEN = ("distill", "fedavg", "search", "report", "stages", "pipeline", "study")


def imported_modules(path: Path) -> set[str]:
    """Every distdd_nas module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "distdd_nas"}


def test_transport_imports_no_algorithm_or_stage() -> None:
    files = [*FLOWER.glob("*.py"), PACKAGE / "processes.py"]
    bad = {
        f"{path.name}: {module}"
        for path in files
        for module in imported_modules(path)
        if module.split(".")[1] in FORBIDDEN
    }
    assert not bad


def test_flower_modules_form_no_cycle() -> None:
    names = {p.stem for p in FLOWER.glob("*.py") if p.stem != "__init__"}
    prefix = "distdd_nas.federation.flower."
    graph = {
        name: {
            m[len(prefix) :].split(".")[0]
            for m in imported_modules(FLOWER / f"{name}.py")
            if m.startswith(prefix)
        }
        & names
        for name in names
    }
    assert not graph["apps"] & {"runtime", "launch", "simulation", "deployment"}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in graph[name]:
            visit(dep, (*path, name))
        done.add(name)

    for name in sorted(names):
        visit(name, ())


def test_importing_the_wing_needs_no_flower() -> None:
    """Everything but the apps imports without loading flwr (nor ray)."""
    code = (
        "import sys\n"
        "import distdd_nas.federation.flower\n"
        "import distdd_nas.federation.flower.engine\n"
        "import distdd_nas.federation.flower.outputs\n"
        "import distdd_nas.federation.flower.project\n"
        "import distdd_nas.federation.flower.launch\n"
        "import distdd_nas.federation.flower.simulation\n"
        "import distdd_nas.federation.flower.deployment\n"
        "import distdd_nas.federation.flower.runtime\n"
        "import distdd_nas.processes\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('flwr', 'ray'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
