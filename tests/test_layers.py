"""The package's layers: each module imports only from its own layer or those below it (guides/architecture.md).

web -> cluster -> jobs -> engine -> video, model; `config` and `cancellation` sit under everything;
`cli` and `serve` are entry points on top. Read from the source with `ast`, so a new
module or a lazy import inside a function is checked too.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "video_analysis"
# What each part of the package may import from the package, besides itself.
ALLOWED = {
    "config": set(),
    "cancellation": set(),
    "video": {"config", "cancellation"},
    "model": {"config", "cancellation"},
    "engine": {"config", "cancellation", "video", "model"},
    "jobs": {"config", "cancellation", "video", "model", "engine"},
    "cluster": {"config", "cancellation", "video", "model", "engine", "jobs"},
    "web": {"config", "cancellation", "video", "model", "engine", "jobs", "cluster"},
    "cli": {"config", "cancellation", "video", "model", "engine"},
    "serve": {"config"},
}


def _part(path: pathlib.Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_parts(path: pathlib.Path) -> set:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "video_analysis" and len(pieces) > 1:
                parts.add(pieces[1])
    return parts


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_part_of_the_package_has_a_layer():
    assert {_part(p) for p in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_point_down(path):
    part = _part(path)
    upward = _imported_parts(path) - ALLOWED[part] - {part}
    assert not upward, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(upward)}, which sit above or beside it"


def test_no_relative_imports():
    """Absolute imports only, so the checks above see every import."""
    relative = [str(p.relative_to(PACKAGE)) for p in MODULES
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(p.read_text())))]
    assert relative == []
