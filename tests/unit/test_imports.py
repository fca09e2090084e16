"""The import graph of our packages (DESIGN §2), read from the source with `ast`.

- `smsfleet/` is the kernel: it imports no other package of ours (`python -m smsfleet` reaches the
  command line through `runpy`, which is not an import).
- `cli/` imports everything and is imported by nothing of ours (tests and benchmarks are not scanned).
- No cycle between packages.

Every import counts: at module level, inside functions, under `if TYPE_CHECKING:`; `from .x import y`
is resolved against the module's package.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "smsfleet"
COMMAND_LINE = "cli"
PACKAGES = ("smsfleet", "cli", "producers", "workers", "gateways", "webhooks", "admin")


@dataclass(frozen=True)
class Import:
    file: str  # relative to the root
    line: int
    source: str  # the statement as written
    package: str  # the package of ours that the file belongs to
    target: str  # the package of ours that it imports

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source}"


def _module_name(root: Path, path: Path) -> tuple[str, bool]:
    """('a.b.c', False) for a/b/c.py; ('a.b', True) for a/b/__init__.py."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement reaches."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        return [node.module or ""]
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return [".".join([*base, node.module] if node.module else base)]


def imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> Iterator[Import]:
    """Every import, in every module of `packages` under `root`, of a package in `packages`."""
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module, is_package = _module_name(root, path)
            source = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(source, filename=str(path))):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                for name in _imported(node, module, is_package):
                    target = name.split(".")[0]
                    if target in packages:
                        text = ast.get_source_segment(source, node) or ast.unparse(node)
                        yield Import(str(path.relative_to(root)), node.lineno, text, package, target)


def arrows(found: list[Import]) -> dict[str, dict[str, Import]]:
    """package -> {package it imports: the first import that makes the arrow}."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in found:
        if imp.target != imp.package:
            graph.setdefault(imp.package, {}).setdefault(imp.target, imp)
    return graph


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Each cycle once, as the packages on it in order (the first one repeated at the end)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], {})):
            if nxt == path[0]:
                if (key := frozenset(path)) not in seen:
                    seen.add(key)
                    found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle is walked from its smallest package
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return found


def violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    found = list(imports(root, packages))
    problems = [
        f"the kernel imports another package of ours: {imp}"
        for imp in found
        if imp.package == KERNEL and imp.target != KERNEL
    ]
    problems += [
        f"the command line is imported by {imp.package}/: {imp}"
        for imp in found
        if imp.target == COMMAND_LINE and imp.package != COMMAND_LINE
    ]
    graph = arrows(found)
    for cycle in cycles(graph):
        hops = "; ".join(str(graph[a][b]) for a, b in itertools.pairwise(cycle))
        problems.append(f"import cycle {' -> '.join(cycle)}: {hops}")
    return problems


def test_every_package_is_scanned() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_the_kernel_imports_nothing_of_ours_cli_is_imported_by_nothing_and_there_is_no_cycle() -> None:
    problems = violations(ROOT)
    assert not problems, "\n" + "\n".join(problems)


def test_the_check_finds_each_kind_of_bad_import(tmp_path: Path) -> None:
    files = {
        "smsfleet/__init__.py": "",
        "smsfleet/__main__.py": 'import runpy\n\nrunpy.run_module("cli", run_name="__main__")\n',
        "smsfleet/settings.py": "def f():\n    from workers.send import x\n",
        "cli/__init__.py": "from workers import run\n",
        "workers/__init__.py": "from .send import run\n",
        "workers/send.py": "from ..gateways import base\nfrom cli import main\n",
        "gateways/__init__.py": "from . import base\n",
        "gateways/base.py": "import workers.send\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    problems = violations(tmp_path, ("smsfleet", "cli", "workers", "gateways"))
    assert problems == [
        "the kernel imports another package of ours: smsfleet/settings.py:2: from workers.send import x",
        "the command line is imported by workers/: workers/send.py:2: from cli import main",
        "import cycle cli -> workers -> cli: cli/__init__.py:1: from workers import run; "
        "workers/send.py:2: from cli import main",
        "import cycle gateways -> workers -> gateways: gateways/base.py:1: import workers.send; "
        "workers/send.py:1: from ..gateways import base",
    ]
