"""docs/architecture.md cites only what exists: every path, and every `module.Name` inside spade_viz
(a top-level definition of that module, or a method of a class defined there)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
CITED = re.compile(r"`([^`\s]+)`")


def _definitions(module: Path) -> set[str]:
    """Top-level names a module defines or imports, and `Class.method` for its classes."""
    names = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{item.name}" for item in node.body
                          if isinstance(item, (ast.FunctionDef, ast.AnnAssign, ast.Assign))
                          and hasattr(item, "name")}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def _module_file(dotted: str) -> Path | None:
    base = ROOT / "spade_viz" / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_every_cited_path_and_name_exists():
    missing = []
    for token in CITED.findall(DOC.read_text(encoding="utf-8")):
        token = token.rstrip(",.:;")
        if token.startswith(("/", "~")):  # an address or a user's folder, not a file of the repository
            continue
        if "/" in token:  # a path from the repository's root
            if not (ROOT / token).exists():
                missing.append(token)
            continue
        parts = token.split(".")
        if len(parts) < 2 or not all(p.isidentifier() for p in parts) or token.endswith(".py"):
            continue
        for cut in range(len(parts) - 1, 0, -1):  # the longest module prefix, then the name in it
            module = _module_file(".".join(parts[:cut]))
            if module is not None:
                if ".".join(parts[cut:]) not in _definitions(module):
                    missing.append(token)
                break
    assert not missing, f"docs/architecture.md cites what does not exist: {missing}"


def test_the_check_catches_a_name_that_moved():
    assert "ExitPage" in _definitions(_module_file("app.state"))
    assert "ExitPage.needs_opening" in _definitions(_module_file("app.state"))
    assert "_ModelSlot" not in _definitions(_module_file("app.models"))
