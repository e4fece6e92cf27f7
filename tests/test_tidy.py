"""House rules read from the source, in the spirit of TigerBeetle's ``tidy.zig``.

Data flows one way, ``api`` → ``exchange`` → ``ledger`` → database, so a lower layer never
imports a higher one. Inside ``ledger/`` money is integers (no ``float(``) and nothing
prints. Each rule is checked on the syntax tree, so comments and docstrings may still
talk about floats.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (rule, package whose files are read, package they must not import)
LAYERS: list[tuple[str, str, str]] = [
    ("ledger never imports exchange", "ledger", "exchange"),
    ("ledger never imports api", "ledger", "api"),
    ("exchange never imports api", "exchange", "api"),
]

# (rule, package whose files are read, builtin it must not call)
CALLS: list[tuple[str, str, str]] = [
    ("money is integers: no float() in ledger", "ledger", "float"),
    ("ledger does not print", "ledger", "print"),
]


def _sources(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files: the rule would check nothing"
    return files


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, wherever it sits:
    top level, inside functions, relative (resolved against ``module``), or through
    ``importlib.import_module("…")`` / ``__import__("…")`` with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [
                (node.lineno, f"{target}.{alias.name}" if target else alias.name)
                for alias in node.names
            ]
        elif (
            isinstance(node, ast.Call)
            and _called_name(node) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _called_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _calls(source: str, name: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]


def _reaches(imported: str, forbidden: str) -> bool:
    return imported == forbidden or imported.startswith(forbidden + ".")


@pytest.mark.parametrize(("rule", "package", "forbidden"), LAYERS, ids=[r[0] for r in LAYERS])
def test_layers_import_downwards_only(rule: str, package: str, forbidden: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in _sources(package)
        for line, imported in _imports(
            path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py"
        )
        if _reaches(imported, forbidden)
    ]

    assert offences == [], f"{rule}:\n" + "\n".join(offences)


@pytest.mark.parametrize(("rule", "package", "builtin"), CALLS, ids=[r[0] for r in CALLS])
def test_forbidden_calls(rule: str, package: str, builtin: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line} calls {builtin}()"
        for path in _sources(package)
        for line in _calls(path.read_text(encoding="utf-8"), builtin)
    ]

    assert offences == [], f"{rule}:\n" + "\n".join(offences)


# The checkers themselves, so a rule that can never fire does not pass unnoticed:
# (case, source inside ledger/service.py, the forbidden package it reaches)
CAUGHT: list[tuple[str, str, str]] = [
    ("plain import", "import api.app", "api"),
    ("from import", "from api import schemas", "api"),
    ("import inside a function", "def f():\n    from exchange.service import X", "exchange"),
    ("relative import", "from .. import api", "api"),
    ("relative module import", "from ..exchange.model import Quote", "exchange"),
    ("import_module", "import importlib\nimportlib.import_module('api.cli')", "api"),
]


@pytest.mark.parametrize(("case", "source", "forbidden"), CAUGHT, ids=[r[0] for r in CAUGHT])
def test_the_import_reader_sees_every_form(case: str, source: str, forbidden: str) -> None:
    imported = [name for _line, name in _imports(source, "ledger.service")]

    assert any(_reaches(name, forbidden) for name in imported), imported


def test_the_call_reader_sees_calls_not_words() -> None:
    source = '"""Never float(...) money."""\nx = float("1.5")  # float( in a comment\nprint(x)\n'

    assert (_calls(source, "float"), _calls(source, "print")) == ([2], [3])
    assert _calls("isinstance(value, float)", "float") == []
