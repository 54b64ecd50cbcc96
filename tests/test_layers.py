"""The import layering of the package (README, "Design notes"), read from the source.

Every ``import`` and ``from … import`` in ``src/eoslab`` counts, at module level or inside a
function: a lazy import is still a dependency. A module may import its own layer and the
layers below it, never one above. Layers, lowest first::

    foundation   eoslab.errors, eoslab.problem, eoslab.progress, eoslab.typing, eoslab.data, eoslab._precision
    models       eoslab.models
    spectra      eoslab.spectra
    dynamics     eoslab.dynamics
    theory       eoslab.theory
    experiments  eoslab.experiments (schema, registry, runner, store, claims, sweeps)
    output       eoslab.plots, eoslab.report, eoslab.view
    glue         eoslab.experiments.kinds, eoslab.cli

``eoslab.experiments.kinds`` is glue like the CLI (config → library → arrays, measures and
figures drawn by ``plots``); the core of ``experiments`` finds the kinds by name at run time
(``importlib``), never by a static import. The package root ``eoslab/__init__.py`` re-exports
``EoslabError``, ``Problem`` and ``x64`` (foundation) at import time; its functions (``eoslab.load``) are
a facade and may reach any layer lazily. ``from eoslab import X`` counts as an import of the
module ``X`` comes from.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "eoslab"

#: (module prefix, layer); the longest matching prefix decides.
LAYERS = {
    "eoslab.errors": 0, "eoslab.problem": 0, "eoslab.progress": 0, "eoslab.typing": 0, "eoslab.data": 0,
    "eoslab._precision": 0, "eoslab.partial": 0,
    "eoslab.models": 1,
    "eoslab.spectra": 2,
    "eoslab.dynamics": 3,
    "eoslab.theory": 4,
    "eoslab.experiments": 5,
    "eoslab.plots": 6, "eoslab.report": 6, "eoslab.view": 6,
    "eoslab.experiments.kinds": 7, "eoslab.cli": 7, "eoslab.__main__": 7,
}
NAMES = ["foundation", "models", "spectra", "dynamics", "theory", "experiments", "plots/report/view", "kinds/cli"]

#: What ``from eoslab import X`` resolves to (names the root re-exports).
ROOT_EXPORTS = {"EoslabError": "eoslab.errors", "Problem": "eoslab.problem", "x64": "eoslab._precision"}


def layer_of(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported eoslab module) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "eoslab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "eoslab":
                continue
            if mod == "eoslab":  # `from eoslab import X`: a submodule or a re-exported name
                out += [(node.lineno, ROOT_EXPORTS.get(a.name, f"eoslab.{a.name}")) for a in node.names]
            else:
                out.append((node.lineno, mod))
    return out


def _files():
    return sorted(p for p in SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    """A new top-level module or folder must be given a layer here (and in README)."""
    missing = [module_name(p) for p in _files() if p != SRC / "__init__.py" and layer_of(module_name(p)) is None]
    assert not missing, f"modules without a layer (add them to LAYERS and README's design notes): {missing}"


def test_no_lower_layer_imports_a_higher_one():
    bad = []
    for path in _files():
        if path == SRC / "__init__.py":
            continue
        me = module_name(path)
        mine = layer_of(me)
        for line, target in imports(path):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {me} ({NAMES[mine]}) imports "
                           f"{target} ({NAMES[theirs]})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_root_imports_only_the_foundation_at_import_time():
    bad = [t for _, t in imports(SRC / "__init__.py", top_level_only=True) if layer_of(t) != 0]
    assert not bad, f"`import eoslab` must not pull in higher layers: {bad}"


def test_the_errors_module_imports_nothing_of_eoslab():
    assert imports(SRC / "errors.py") == []


def _private_submodule(package: str, name: str, importer: str) -> bool:
    """``from eoslab.cli import _parse`` inside ``eoslab.cli``: a package-private module, allowed."""
    folder = SRC.parent.joinpath(*package.split("."))
    return importer.startswith(package + ".") and (folder / f"{name}.py").exists()


def test_no_private_names_imported_across_modules():
    """``from eoslab.x import _name`` in another module: make the helper public (or move it)."""
    bad = []
    for path in _files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        me = module_name(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eoslab") \
                    and node.module != me:
                bad += [f"{path.relative_to(SRC.parent)}:{node.lineno}: {node.module}.{a.name}"
                        for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                        and not _private_submodule(node.module, a.name, me)]
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


@pytest.mark.parametrize("source,expected", [
    ("from eoslab.cli import app\n", ["eoslab.cli"]),
    ("import eoslab.theory.eos2d as t\n", ["eoslab.theory.eos2d"]),
    ("def f():\n    from eoslab.plots import style\n", ["eoslab.plots"]),
    ("from eoslab import Problem, dynamics\n", ["eoslab.problem", "eoslab.dynamics"]),
    ("from ..theory import eos2d\n", ["eoslab.theory"]),
    ("import numpy\nfrom jax import numpy\n", []),
])
def test_the_reader_sees_every_kind_of_import(tmp_path, monkeypatch, source, expected):
    """The checker itself: a lazy, aliased, relative or root import is found (so the test can fail)."""
    pkg = tmp_path / "eoslab" / "dynamics"
    pkg.mkdir(parents=True)
    f = pkg / "mod.py"
    f.write_text(source)
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path / "eoslab")
    assert [t for _, t in imports(f)] == expected
    assert layer_of("eoslab.experiments.kinds.companions") == 7 and layer_of("eoslab.experiments.store") == 5
