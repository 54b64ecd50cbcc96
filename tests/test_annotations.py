"""Every public function of ``models/``, ``spectra/`` and ``dynamics/`` is annotated.

Parameters and return carry types, with jaxtyping shapes for arrays (the names of
:mod:`eoslab.typing`: ``P`` parameters, ``D``/``N`` data, ``B`` batch, ``T`` steps, ``k``
eigenpairs). Read from the source (``ast``), so a new function without annotations fails here;
then every annotation is evaluated (``typing.get_type_hints``), so a misspelt or unimported name
fails too. The annotations are documentation: nothing checks them at run time.
"""

from __future__ import annotations

import ast
import importlib
import typing
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "eoslab"
PACKAGES = ("models", "spectra", "dynamics")


def unannotated(source: str) -> list[tuple[str, list[str], bool]]:
    """(function, parameters without annotation, return missing) for each public module-level
    function of ``source`` that lacks one."""
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
            missing = [p.arg for p in params if p.annotation is None]
            if missing or node.returns is None:
                out.append((node.name, missing, node.returns is None))
    return out


def _modules():
    for pkg in PACKAGES:
        for path in sorted((SRC / pkg).glob("*.py")):
            yield path


def _name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_public_functions_are_annotated(path):
    missing = unannotated(path.read_text())
    assert not missing, "\n".join(f"{_name(path)}.{fn}: parameters {params} unannotated"
                                  + (", no return annotation" if ret else "") for fn, params, ret in missing)
    module = importlib.import_module(_name(path))
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            typing.get_type_hints(getattr(module, node.name))  # raises on a name that does not resolve


def test_the_reader_finds_what_is_missing():
    src = ("def f(a, b: int, *args, c, **kw) -> int: ...\n"
           "def g(x: int): ...\n"
           "def h(x: int) -> None: ...\n"
           "def _private(x): ...\n")
    assert unannotated(src) == [("f", ["a", "c", "args", "kw"], False), ("g", [], True)]
