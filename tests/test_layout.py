"""The package's imports flow one way: each sub-package imports only the layers its
`__init__` docstring names, and nothing below the CLI knows about typer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowcli"
TOP = "top"  # modules directly in flowcli/: the model and what it is built from
# Which parts of flowcli each part may import (besides itself).
ALLOWED = {
    "errors": set(),
    "parallel": {"errors"},
    "table": {"errors", "parallel"},
    "encode": {"errors", "table"},
    "flow": {"errors", "parallel"},
    "condition": {"errors", "parallel", "table", "encode", "flow"},
    TOP: {"errors", "parallel", "table", "encode", "flow", "condition", "__init__"},
    "evaluate": {"errors", "parallel", "table", "encode", "flow", "condition", TOP},
    "cli": {"errors", "parallel", "table", "encode", "flow", "condition", TOP, "evaluate", "__init__"},
}


def part_of(module: str) -> str:
    """'flowcli.table.io' -> 'table'; 'flowcli.model' -> TOP; 'flowcli.errors' -> 'errors'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "errors" if parts[1] == "errors" else TOP


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flowcli":
            found.add(node.module)
            if node.module == "flowcli":  # `from flowcli import x`: x may be a module
                found |= {f"flowcli.{alias.name}" for alias in node.names if (PACKAGE / f"{alias.name}.py").exists()}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "flowcli"}
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    relative = path.relative_to(PACKAGE)
    own = "errors" if relative.name == "errors.py" else relative.parts[0] if len(relative.parts) > 1 else TOP
    if relative.parts == ("__init__.py",) or relative.parts == ("__main__.py",):
        return  # the package's front door re-exports from above, lazily
    wrong = {m for m in imports(path) if part_of(m) != own and part_of(m) not in ALLOWED[own]}
    assert not wrong, f"{relative} ({own}) imports {sorted(wrong)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_knows_typer(path):
    if path.relative_to(PACKAGE).parts[0] == "cli":
        return
    names = {alias.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert not names & {"typer", "click", "rich"}, path


def test_every_folder_is_small():
    for folder in [PACKAGE, *(p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")]:
        assert len(list(folder.glob("*.py"))) <= 12, folder
    for path in MODULES:
        assert len(path.read_text().splitlines()) <= 400, path


def test_every_subpackage_says_what_it_owns_and_imports():
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        assert "Owns" in doc and ("import" in doc), folder
