"""Imports run one way, from the entry points down to the vocabulary: a module may import
its own package and the floors below it, never a floor above (nor a neighbour on its own
floor). Walks every import statement, function-local ones included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Top floor first. Packages on one floor do not import each other.
FLOORS: list[tuple[str, ...]] = [
    ("bench",),  # benchmarks drive the whole stack
    ("cli",),  # entry points: the zhida command, the dev-stack launcher, schedules
    ("api", "workers", "seed"),
    ("workflows",),
    ("activities",),
    ("domain", "adapters", "simulators"),
    ("core",),
    ("models",),
]
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}
# Inside domain/, the pure rule engine is the ground: no database, no other capability.
PURE_ENGINE = "domain.engine"
NOT_IN_ENGINE = ("sqlalchemy", "sqlmodel", "asyncpg", "aiosqlite", "temporalio", "domain.")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in FLOOR:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(p for p in parts if p != "__init__"), path))
    return found


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.rsplit(".", node.level)[0]
                names.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            elif node.module:
                names.append((node.lineno, node.module))
    return names


def test_every_import_runs_down_the_floors() -> None:
    back_up = []
    for module, path in _modules():
        here = module.split(".")[0]
        for line, name in _imports(path, module):
            there = name.split(".")[0]
            if there not in FLOOR or there == here:
                continue
            if FLOOR[there] <= FLOOR[here]:
                back_up.append(f"{path.relative_to(ROOT)}:{line} {module} -> {name}")
    assert back_up == [], "imports that run back up or sideways:\n" + "\n".join(back_up)


def test_the_rule_engine_is_pure() -> None:
    impure = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for module, path in _modules()
        if module.startswith(PURE_ENGINE)
        for line, name in _imports(path, module)
        if name.startswith(NOT_IN_ENGINE) and not name.startswith(PURE_ENGINE)
    ]
    assert impure == []


def test_the_walk_sees_a_real_import() -> None:
    # guards the test itself: the walk must find known downward imports
    found = {
        name
        for module, path in _modules()
        if module == "workers.main"
        for _line, name in _imports(path, module)
    }
    assert "workflows.all" in found and "core.settings" in found
