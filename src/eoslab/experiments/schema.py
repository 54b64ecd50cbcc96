"""Experiment configs: TOML files parsed with :mod:`tomllib` and validated against a kind's schema.

A config has these top-level tables (see ``docs/experiments.md`` for a worked example):

``[experiment]``
    ``name``, ``kind``, ``title``, ``source`` (required), ``description``, ``seed`` (optional).
parameter sections (``[model]``, ``[init]``, ``[dynamics]``, ``[track]``, ...)
    whatever the kind's :attr:`~eoslab.experiments.registry.Kind.schema` declares; every
    parameter has a type and a default (or is required). Parameter names are unique across
    sections, so a run's parameters form one flat dict.
``[sweep]``
    axes: ``name = [values...]`` for any parameter or ``seed`` (a float axis may also be a range
    string ``"START:STOP:NUM"``, NUM evenly spaced values, or ``"log:START:STOP:NUM"``, evenly
    spaced in log); the runs are the Cartesian product (``mode = "zip"`` pairs all the axes
    instead; ``zip = [["lr", "steps"]]`` pairs just those axes, the groups then combined by
    product).
``[quick]`` / ``[full]``
    overrides of the parameter sections and of ``[sweep]`` for ``--quick`` / ``--full``.
``[[claims]]``
    one table per claim (see :data:`CLAIM_FIELDS`).

Every error names the file, the line and the key. :mod:`tomllib` gives no positions, so
the line is found by scanning the text for the key under its table header
(:func:`find_line`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

from eoslab.errors import MAX_INT, MAX_SEED, EoslabError, between, nonnegative, seed_rule

REQUIRED = object()
MODES = ("quick", "full")
RESERVED = ("experiment", "sweep", "quick", "full", "claims")
RELATIONS = ("approx", "le", "ge")

_TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One parameter of a kind's schema.

    Attributes:
      type: ``float``, ``int``, ``str``, ``bool``, or ``list`` (a list of numbers, e.g. a
        2-D initial point; ``length`` fixes its size).
      default: the value when the config omits it (:data:`REQUIRED`: must be given).
      doc: one line shown in ``docs``/``eoslab show``; say the unit.
      choices: allowed values (for strings).
      check: ``check(value) -> str | None``: an error message, or None if valid.
      length: for ``list`` fields, the required length (None: any).
      static: True if runs with different values cannot share one vectorised call
        (array shapes, step counts): the runner only puts runs with equal static
        parameters in the same chunk.
    """

    type: type
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None
    length: int | None = None
    static: bool = False
    finite: bool = True
    max_int: int = MAX_INT

    def coerce(self, value, where: str) -> Any:
        """``value`` converted to this field's type, or an :class:`EoslabError` naming ``where``.
        Numbers must be finite (unless ``finite=False``) and integers within ±(2³¹ − 1), so that
        NaN, inf and overflowing counts are refused when the config is read, not when it runs."""
        v = _coerce(self.type, value, where, self.length, self.finite, self.max_int)
        if self.choices is not None and v not in self.choices:
            raise EoslabError(f"{where}: must be one of {list(self.choices)}, got {v!r}")
        if self.check is not None:
            msg = self.check(v)
            if msg:
                raise EoslabError(f"{where}: {msg} (got {v!r})")
        return v


def _describe(value) -> str:
    return f"{type(value).__name__} {value!r}"


def _coerce(typ, value, where: str, length: int | None = None, finite: bool = True, max_int: int = MAX_INT):
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EoslabError(f"{where}: expected a number, got {_describe(value)}")
        try:
            v = float(value)
        except OverflowError:
            raise EoslabError(f"{where}: the number is too large ({_describe(value)[:40]})") from None
        if finite and not math.isfinite(v):
            raise EoslabError(f"{where}: must be a finite number, got {v!r}")
        return v
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EoslabError(f"{where}: expected an integer, got {_describe(value)}")
        if abs(value) > max_int:
            raise EoslabError(f"{where}: must be an integer of at most {max_int:,} in size (too large), "
                              f"got {value:.3e}")
        return int(value)
    if typ is list:
        if not isinstance(value, list):
            raise EoslabError(f"{where}: expected a list of numbers, got {_describe(value)}")
        out = [_coerce(float, x, f"{where}[{i}]", None, finite) for i, x in enumerate(value)]
        if length is not None and len(out) != length:
            raise EoslabError(f"{where}: expected a list of {length} numbers, got {len(out)}")
        return out
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise EoslabError(f"{where}: expected {_TYPE_NAMES.get(typ, typ.__name__)}, got {_describe(value)}")
    return value


# ---- positions -------------------------------------------------------------------------------
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'")


def _code(line: str) -> str:
    """``line`` with the contents of its string *values* blanked (a quoted key, followed by
    ``=``, is kept) and its comment removed: what is left can only define keys, so a value such
    as ``"see n = 3"`` is not taken for the key ``n``. Same length up to the comment."""
    def blank(m):
        text = m.group(0)
        return text if re.match(r"\s*=", line[m.end():]) else text[0] + " " * (len(text) - 2) + text[-1]

    return _STRING.sub(blank, line).split("#", 1)[0]


def _key_pattern(key: str) -> re.Pattern:
    k = re.escape(key)
    return re.compile(rf"""(^|[\s{{,.])("{k}"|'{k}'|{k})\s*=""")


def find_line(text: str, table: str, key: str | None = None, occurrence: int = 0) -> int:
    """1-based line of ``key`` inside ``[table]`` (dotted path, e.g. ``"quick.dynamics"``;
    ``""`` for the top level; ``occurrence`` picks the n-th ``[[table]]``), or of the header
    when ``key`` is None. Falls back to the header, then to the first line naming the key,
    then to line 1. Also finds ``table.key = ...`` dotted keys and keys in inline tables."""
    lines = text.splitlines()
    if not table and key:  # a top-level key may be a table: find its header
        for i, line in enumerate(lines, 1):
            m = _HEADER.match(line)
            if m and m.group(1).replace(" ", "").split(".")[0] == key:
                return i
    current, seen, header_line = "", -1, None
    key_re = _key_pattern(key) if key else None
    parent, _, last = table.rpartition(".")
    for i, line in enumerate(lines, 1):
        stripped = _code(line)
        m = _HEADER.match(line)
        if m:
            current = m.group(1).replace(" ", "")
            if current == table:
                seen += 1
                if seen == occurrence:
                    header_line = i
            continue
        if key_re is None:
            continue
        in_table = current == table and seen == occurrence
        # `table.key = ...` written as a dotted key in the parent table
        dotted = current == parent and re.match(rf"\s*{re.escape(last)}\s*\.", stripped) if table else False
        if (in_table or dotted) and key_re.search(stripped):
            return i
        # `[parent]` with `last = { key = ... }` (inline table)
        if current == parent and re.match(rf"\s*{re.escape(last)}\s*=\s*\{{", stripped) and key_re.search(
                stripped.split("{", 1)[1]):
            return i
    if header_line is not None:
        return header_line
    if key:
        for i, line in enumerate(lines, 1):
            if key_re.search(line):
                return i
    return 1


# ---- the config object ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Claim:
    """A predicted value or relation, checked against a measurement of the stored runs.

    ``measure`` and ``predict`` name functions of the kind; ``where`` selects the runs
    (sweep-axis values) the measure sees. PASS iff, with ``u`` the combined uncertainty
    ``√(u_meas² + u_pred²)`` and ``tol = tolerance + sigmas·u``:
    ``approx``: ``|m − p| ≤ tol``; ``le``: ``m ≤ p + tol``; ``ge``: ``m ≥ p − tol``.
    """

    id: str
    statement: str
    source: str
    measure: str
    where: dict
    predicted: float | None
    predict: str | None
    relation: str
    tolerance: float
    sigmas: float
    why: str
    line: int


#: Keys of a ``[[claims]]`` table: (type, default, doc).
CLAIM_FIELDS = {
    "id": Field(str, doc="unique id, e.g. 'eos-limit-eps0.02'"),
    "statement": Field(str, doc="the claim in words, with its setting"),
    "source": Field(str, doc="paper and theorem/figure, or 'reference numbers of exact GD'"),
    "measure": Field(str, doc="name of a measure of the kind"),
    "where": Field(dict, {}, doc="sweep-axis values selecting the runs"),
    "predicted": Field(float, None, doc="the predicted number (or give `predict`)"),
    "predict": Field(str, None, doc="name of a prediction of the kind (or give `predicted`)"),
    "relation": Field(str, "approx", choices=RELATIONS, doc="approx | le | ge"),
    "tolerance": Field(float, doc="absolute tolerance (≥ 0, below 10·max(1, |predicted|))", check=nonnegative),
    "sigmas": Field(float, 0.0, doc="also allow this many combined standard uncertainties",
                    check=between(0, 100)),
    "why": Field(str, doc="justification of the tolerance (required)"),
}

EXPERIMENT_FIELDS = {
    "name": Field(str, doc="unique experiment name (used for --only and the results folder)",
                  check=lambda v: None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v)
                  else "letters, digits, '_', '-', '.' only"),
    "kind": Field(str, doc="the registered kind that runs it"),
    "title": Field(str, doc="one line for the report"),
    "source": Field(str, doc="paper, theorem or figure reproduced"),
    "description": Field(str, "", doc="a paragraph for the report"),
    "seed": Field(int, 0, doc="seed of every run unless `seed` is a sweep axis (0 … 2³²−1)", check=seed_rule,
                  max_int=MAX_SEED),
}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A validated config. ``params`` is per section; ``overrides[mode]`` per mode."""

    path: Path
    name: str
    kind: str
    title: str
    source: str
    description: str
    seed: int
    params: dict        # section -> {name: value}
    sweep: dict         # axis -> list of values ('seed' allowed); plus mode
    sweep_mode: str
    overrides: dict     # mode -> {"params": {section: {...}}, "sweep": {...}, "sweep_mode": ..., "zips": ...}
    claims: tuple
    zips: tuple = ()    # groups of zipped axes (tuples of names); the other axes are a product

    def resolved(self, mode: str) -> tuple[dict, dict, str]:
        """``(params by section, sweep axes, sweep mode)`` for ``mode`` ('quick' or 'full')."""
        if mode not in MODES:
            raise EoslabError(f"unknown mode {mode!r}; expected one of {MODES}")
        ov = self.overrides.get(mode, {})
        params = {s: dict(v) for s, v in self.params.items()}
        for s, vals in ov.get("params", {}).items():
            params[s].update(vals)
        sweep = dict(self.sweep)
        sweep.update(ov.get("sweep", {}))
        return params, sweep, ov.get("sweep_mode", self.sweep_mode)

    def groups(self, mode: str) -> list[tuple[str, ...]]:
        """The sweep's dimensions in ``mode``: each a tuple of axes whose values are paired
        (zipped); the runs are the product over the groups. A plain product sweep has one
        axis per group, ``mode = "zip"`` one group holding every axis."""
        _, sweep, how = self.resolved(mode)
        names = list(sweep)
        if how == "zip":
            return [tuple(names)] if names else []
        zips = self.overrides.get(mode, {}).get("zips", self.zips)
        zips = [tuple(a for a in g if a in sweep) for g in zips]
        zips = [g for g in zips if g]
        first = {g[0]: g for g in zips}
        zipped = {a for g in zips for a in g}
        return [first[n] if n in first else (n,) for n in names if n in first or n not in zipped]

    def points(self, mode: str) -> list[dict]:
        """The runs of ``mode``: each a flat dict of every parameter plus ``seed``, with the
        swept values filled in, in sweep order (the product over :meth:`groups`, the last
        group varying fastest)."""
        params, sweep, _ = self.resolved(mode)
        base = {k: v for sec in params.values() for k, v in sec.items()}
        base["seed"] = self.seed
        groups = self.groups(mode)
        per_group = [list(zip(*(sweep[a] for a in g))) for g in groups]
        out = []
        for combo in itertools.product(*per_group):
            point = dict(base)
            for g, values in zip(groups, combo):
                point.update(zip(g, values))
            out.append(point)
        return out

    def swept(self, mode: str) -> list[str]:
        return list(self.resolved(mode)[1])


def read_text(path: Path) -> str:
    """The UTF-8 text of a config, or an :class:`EoslabError` naming the file (and the line of a
    byte that is not UTF-8)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise EoslabError(f"cannot read config {path}: {e.strerror or e}") from None
    try:
        # a byte-order mark (Notepad's "UTF-8") is not part of the text; tomllib refuses it as
        # "Invalid statement (at line 1, column 1)"
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise EoslabError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as "
                          "UTF-8") from None


def _loc(path, text, table, key=None, occurrence=0) -> str:
    return f"{path}:{find_line(text, table, key, occurrence)}"


#: ``[experiment]`` keys of a user sweep file: only ``name`` and ``kind`` are required.
SWEEP_EXPERIMENT_FIELDS = {**EXPERIMENT_FIELDS, "title": Field(str, "", doc="one line for the summary"),
                           "source": Field(str, "", doc="where the setting comes from (optional)")}


def load_config(path: str | Path, kinds: dict | None = None, *, raw: dict | None = None,
                user_sweep: bool = False) -> Experiment:
    """Parse and validate one TOML config against its kind (looked up in ``kinds``, default
    the registry). Raises :class:`EoslabError` naming file, line and key.

    ``raw``: the already-parsed tables (e.g. a dict written in Python); ``path`` then only
    names it in messages. ``user_sweep``: a user's sweep file, where ``title`` and
    ``source`` are optional (``docs/sweeps.md``)."""
    from eoslab.experiments.registry import get_kind

    path = Path(path)
    if raw is None:
        text = read_text(path)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise EoslabError(f"{path}: invalid TOML: {e}") from None
    else:
        if not isinstance(raw, dict):
            raise EoslabError(f"{path}: a sweep given in Python must be a dict of tables, got {type(raw).__name__}")
        text = ""
    exp_fields = SWEEP_EXPERIMENT_FIELDS if user_sweep else EXPERIMENT_FIELDS

    def unknown(table: str, got: dict, allowed, what: str, occurrence: int = 0):
        for k in got:
            if k not in allowed:
                what_k = f"table [{k}]" if not table else f"key '{k}' in [{table}]"
                raise EoslabError(f"{_loc(path, text, table, k, occurrence)}: unknown {what_k}; "
                                  f"{what}: {', '.join(sorted(allowed)) or 'none'}")

    def table(name, value, occurrence=0):
        if not isinstance(value, dict):
            raise EoslabError(f"{_loc(path, text, '', name)}: '{name}' must be a table [{name}]")
        return value

    if "experiment" not in raw:
        raise EoslabError(f"{path}:1: missing the [experiment] table")
    exp_raw = table("experiment", raw["experiment"])
    unknown("experiment", exp_raw, exp_fields, "allowed keys")
    meta = _fill(exp_fields, exp_raw, path, text, "experiment")
    kind = get_kind(meta["kind"], kinds, where=_loc(path, text, "experiment", "kind"))

    allowed_top = set(RESERVED) | set(kind.schema)
    unknown("", raw, allowed_top, f"tables for kind '{kind.name}'")

    names = {}
    for sec, fields in kind.schema.items():
        for k in fields:
            names[k] = sec
    names_axes = set(names) | {"seed"}

    params = {}
    for sec, fields in kind.schema.items():
        got = table(sec, raw.get(sec, {}))
        unknown(sec, got, fields, f"parameters of kind '{kind.name}'")
        params[sec] = _fill(fields, got, path, text, sec)

    def read_sweep(tname: str, got: dict) -> tuple[dict, str | None, tuple | None]:
        got = dict(got)
        how = got.pop("mode", None)
        zips = got.pop("zip", None)
        if how is not None and how not in ("product", "zip"):
            raise EoslabError(f"{_loc(path, text, tname, 'mode')}: sweep mode must be 'product' or 'zip', "
                              f"got {how!r}")
        unknown(tname, got, names_axes | {"mode", "zip"}, "sweep axes must be parameters")
        out = {}
        for axis, vals in got.items():
            where = f"{_loc(path, text, tname, axis)}: [{tname}] {axis}"
            field = EXPERIMENT_FIELDS["seed"] if axis == "seed" else kind.schema[names[axis]][axis]
            if isinstance(vals, str) and field.type is float:
                vals = parse_range(vals, where)
            if not isinstance(vals, list) or not vals:
                raise EoslabError(f"{where}: a sweep axis must be a non-empty list of values"
                                  + (" or a range \"START:STOP:NUM\"" if field.type is float else ""))
            out[axis] = [field.coerce(v, f"{where}[{i}]") for i, v in enumerate(vals)]
        if zips is not None:
            where = f"{_loc(path, text, tname, 'zip')}: [{tname}] zip"
            if how == "zip":
                raise EoslabError(f"{where}: give either mode = \"zip\" (every axis paired) or zip groups, not both")
            if not (isinstance(zips, list) and zips and all(isinstance(g, list) and len(g) >= 2 and all(
                    isinstance(a, str) for a in g) for g in zips)):
                raise EoslabError(f"{where}: expected a list of groups of axis names, e.g. zip = [[\"lr\", \"steps\"]]")
            seen = set()
            for g in zips:
                for a in g:
                    if a not in out:
                        raise EoslabError(f"{where}: '{a}' is not an axis of [{tname}]")
                    if a in seen:
                        raise EoslabError(f"{where}: axis '{a}' is in two zip groups")
                    seen.add(a)
            zips = tuple(tuple(g) for g in zips)
        return out, how, zips

    sweep, how, zips = read_sweep("sweep", table("sweep", raw.get("sweep", {})))
    sweep_mode = how or "product"

    overrides = {}
    for mode in MODES:
        ov = table(mode, raw.get(mode, {}))
        unknown(mode, ov, set(kind.schema) | {"sweep"}, "allowed override tables")
        o = {"params": {}}
        for sec, vals in ov.items():
            if sec == "sweep":
                o["sweep"], m, z = read_sweep(f"{mode}.sweep", table(f"{mode}.sweep", vals))
                if m:
                    o["sweep_mode"] = m
                if z is not None:
                    o["zips"] = z
                continue
            vals = table(f"{mode}.{sec}", vals)
            unknown(f"{mode}.{sec}", vals, kind.schema[sec], f"parameters of kind '{kind.name}'")
            o["params"][sec] = {k: kind.schema[sec][k].coerce(
                v, f"{_loc(path, text, f'{mode}.{sec}', k)}: [{mode}.{sec}] {k}") for k, v in vals.items()}
        overrides[mode] = o

    claims_raw = raw.get("claims", [])
    if not isinstance(claims_raw, list):
        raise EoslabError(f"{_loc(path, text, '', 'claims')}: claims must be an array of tables [[claims]]")
    claims, ids = [], set()
    for i, c in enumerate(claims_raw):
        if not isinstance(c, dict):
            raise EoslabError(f"{_loc(path, text, '', 'claims')}: each claim must be a table [[claims]]")
        unknown("claims", c, CLAIM_FIELDS, "allowed claim keys", occurrence=i)
        vals = _fill(CLAIM_FIELDS, c, path, text, "claims", occurrence=i)
        loc = lambda k: _loc(path, text, "claims", k, i)
        if vals["id"] in ids:
            raise EoslabError(f"{loc('id')}: duplicate claim id '{vals['id']}'")
        ids.add(vals["id"])
        if (vals["predicted"] is None) == (vals["predict"] is None):
            raise EoslabError(f"{loc('predicted')}: claim '{vals['id']}' needs exactly one of 'predicted' "
                              "(a number) or 'predict' (a prediction of the kind)")
        cap = 10.0 * max(1.0, abs(vals["predicted"])) if vals["predicted"] is not None else 1e6
        if vals["tolerance"] >= cap:
            raise EoslabError(f"{loc('tolerance')}: [claims] tolerance: {vals['tolerance']:g} is too large to ever "
                              f"fail claim '{vals['id']}' (must be below {cap:g}; use relation = 'le' or 'ge' "
                              "for a bound)")
        if vals["measure"] not in kind.measures:
            raise EoslabError(f"{loc('measure')}: unknown measure '{vals['measure']}' of kind '{kind.name}'; "
                              f"known: {', '.join(sorted(kind.measures)) or 'none'}")
        if vals["predict"] is not None and vals["predict"] not in kind.predictions:
            raise EoslabError(f"{loc('predict')}: unknown prediction '{vals['predict']}' of kind "
                              f"'{kind.name}'; known: {', '.join(sorted(kind.predictions)) or 'none'}")
        where = {}
        for k, v in vals["where"].items():
            if k not in names_axes:
                raise EoslabError(f"{loc(k)}: 'where' key '{k}' is not a parameter of kind '{kind.name}'")
            field = EXPERIMENT_FIELDS["seed"] if k == "seed" else kind.schema[names[k]][k]
            where[k] = field.coerce(v, f"{loc(k)}: claims.where.{k}")
        vals["where"] = where
        claims.append(Claim(line=find_line(text, "claims", "id", i), **vals))

    exp = Experiment(path=path, name=meta["name"], kind=kind.name, title=meta["title"], source=meta["source"],
                     description=meta["description"], seed=meta["seed"], params=params, sweep=sweep,
                     sweep_mode=sweep_mode, overrides=overrides, claims=tuple(claims), zips=zips or ())
    for mode in MODES:
        _check_mode(exp, mode, kind, path, text)
    return exp


#: Most points a sweep's grid may have, and most values a range axis may have: beyond them the
#: grid is a typo (``"0.1:1:1000000000"``, two such axes), and merely planning it would hang.
MAX_GRID = 1_000_000
MAX_RANGE = 100_000


def _check_mode(exp: Experiment, mode: str, kind, path, text) -> None:
    params, sweep, how = exp.resolved(mode)
    for sec, vals in params.items():
        for k, v in vals.items():
            if v is REQUIRED and k not in sweep:
                other = [m for m in MODES if m != mode]
                everywhere = all(exp.resolved(m)[0][sec].get(k) is REQUIRED and k not in exp.resolved(m)[1]
                                 for m in other)
                raise EoslabError(f"{_loc(path, text, sec)}: parameter '{k}' has no value"
                                  + (f": set it in [{sec}] or give it a [sweep] axis" if everywhere
                                     else f" in --{mode} mode"))
    if how == "zip" and len({len(v) for v in sweep.values()}) > 1:
        raise EoslabError(f"{_loc(path, text, 'sweep')}: zipped sweep axes have different lengths "
                          f"({ {k: len(v) for k, v in sweep.items()} }) in --{mode} mode")
    for g in exp.groups(mode):
        if len({len(sweep[a]) for a in g}) > 1:
            raise EoslabError(f"{_loc(path, text, 'sweep', 'zip')}: zipped sweep axes have different lengths "
                              f"({ {a: len(sweep[a]) for a in g} }) in --{mode} mode")
    size = math.prod(len(sweep[g[0]]) for g in exp.groups(mode))
    if size > MAX_GRID:
        raise EoslabError(f"{_loc(path, text, 'sweep')}: the sweep's grid has {size:,} points in --{mode} mode "
                          f"({' × '.join(str(len(sweep[g[0]])) for g in exp.groups(mode))}); at most {MAX_GRID:,}")
    for c in exp.claims:
        for k, v in c.where.items():
            if k in sweep:
                if not any(_same(v, x) for x in sweep[k]):
                    raise EoslabError(f"{path}:{c.line}: claim '{c.id}': where {k} = {v!r} is not a value "
                                      f"of the sweep axis {k} in --{mode} mode ({sweep[k]})")
            else:
                fixed = exp.seed if k == "seed" else next(p[k] for p in params.values() if k in p)
                if not _same(v, fixed):
                    raise EoslabError(f"{path}:{c.line}: claim '{c.id}': where {k} = {v!r} but {k} is fixed "
                                      f"to {fixed!r} in --{mode} mode")


def parse_range(text: str, where: str) -> list[float]:
    """``"START:STOP:NUM"`` → NUM evenly spaced values from START to STOP (both included);
    ``"log:START:STOP:NUM"`` → evenly spaced in log (START, STOP > 0)."""
    parts = text.strip().split(":")
    log = parts[0] == "log"
    if log:
        parts = parts[1:]
    try:
        if len(parts) != 3:
            raise ValueError
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise EoslabError(f"{where}: a range must look like \"START:STOP:NUM\" or \"log:START:STOP:NUM\", "
                          f"got {text!r}") from None
    if n < 1 or not (math.isfinite(a) and math.isfinite(b)):
        raise EoslabError(f"{where}: a range needs finite ends and NUM ≥ 1, got {text!r}")
    if n > MAX_RANGE:
        raise EoslabError(f"{where}: a range has at most {MAX_RANGE:,} values (NUM), got {text!r}")
    if log and not (a > 0 and b > 0):
        raise EoslabError(f"{where}: a log range needs START, STOP > 0, got {text!r}")
    if n == 1:
        return [a]
    if log:
        la, lb = math.log(a), math.log(b)
        return [math.exp(la + (lb - la) * i / (n - 1)) for i in range(n)]
    return [a + (b - a) * i / (n - 1) for i in range(n)]


def _same(a, b) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
            _same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def matches(params: dict, where: dict) -> bool:
    """True if a run's flat ``params`` agree with every ``where`` value."""
    return all(_same(params[k], v) for k, v in where.items())


def _fill(fields: dict, got: dict, path, text, table: str, occurrence: int = 0) -> dict:
    out = {}
    for k, f in fields.items():
        if k in got:
            if f.type is dict:
                if not isinstance(got[k], dict):
                    raise EoslabError(f"{_loc(path, text, table, k, occurrence)}: [{table}] {k}: expected an "
                                      f"inline table {{...}}, got {_describe(got[k])}")
                out[k] = dict(got[k])
            else:
                out[k] = f.coerce(got[k], f"{_loc(path, text, table, k, occurrence)}: [{table}] {k}")
        elif f.default is REQUIRED and table in RESERVED:
            raise EoslabError(f"{_loc(path, text, table, None, occurrence)}: missing required key '{k}' in "
                              f"[{table}]" + (f" ({f.doc})" if f.doc else ""))
        else:
            out[k] = f.default
    return out
