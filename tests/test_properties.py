"""Property tests (hypothesis) of the experiment machinery's pure parts: shard ownership, the
``file:line`` finder of config errors, and the coercion of config values. Each property is
checked against an independent statement of what must hold, on generated inputs."""

import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoslab.errors import EoslabError
from eoslab.experiments.runner import Shard
from eoslab.experiments.schema import find_line, load_config

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- shards -----------------------------------------------------------------------------------
run_ids = st.text("0123456789abcdef", min_size=16, max_size=16)


@FAST
@given(st.lists(run_ids, min_size=1, max_size=30), st.integers(1, 40))
def test_every_run_has_exactly_one_shard(ids, count):
    for rid in ids:
        owners = [i for i in range(count) if Shard(i, count).owns(rid)]
        assert owners == [int(rid, 16) % count]


@FAST
@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_shard_parse_round_trip_and_refusals(i, n):
    if i < n:
        assert Shard.parse(f"{i}/{n}") == Shard(i, n)
    else:
        with pytest.raises(EoslabError, match="--shard"):
            Shard.parse(f"{i}/{n}")


@FAST
@given(st.text(max_size=12))
def test_shard_parse_never_crashes(text):
    try:
        s = Shard.parse(text)
    except EoslabError:
        return
    assert 0 <= s.index < s.count


# ---- find_line ---------------------------------------------------------------------------------
names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
scalars = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(-1e6, 1e6, allow_nan=False).map(repr),
                    st.sampled_from(["true", "false", '"text"', "[1, 2]", '"a = 1"', "'x.y = 2'"]))


@st.composite
def toml_docs(draw):
    """(text, {(table, key): line}) of a TOML document with 1–4 tables (some dotted), keys written
    plain, quoted or with odd spacing, comment and blank lines in between."""
    tables = draw(st.lists(st.lists(names, min_size=1, max_size=2).map(".".join), min_size=1, max_size=4,
                           unique=True))
    lines, where = ["# generated", ""], {}
    for t in tables:
        lines.append(draw(st.sampled_from([f"[{t}]", f"[ {t} ]", f"[{t}]  # table"])))
        keys = draw(st.lists(names, min_size=1, max_size=4, unique=True))
        for k in keys:
            if any(k == u.split(".")[0] for u in tables):   # a key named like a table is ambiguous
                continue
            if any(f"{u}.".startswith(f"{t}.{k}.") for u in tables):  # [a] a0 = 0 beside [a.a0]: invalid TOML
                continue
            style = draw(st.sampled_from(["{k} = {v}", "{k}={v}", '"{k}" = {v}', "  {k}   =  {v}  # c"]))
            # a string value may quote another key's assignment ("see n = 3"): not a definition
            v = draw(st.one_of(scalars, st.sampled_from(keys).map(lambda o: f'"see {o} = 3"')))
            lines.append(style.format(k=k, v=v))
            where[(t, k)] = len(lines)
            if draw(st.booleans()):
                lines.append(draw(st.sampled_from(["", "# a comment = 3", "   "])))
        lines.append("")
    return "\n".join(lines) + "\n", where


@FAST
@given(toml_docs())
def test_find_line_points_at_the_key(doc):
    text, where = doc
    tomllib.loads(text)  # the generator writes valid TOML
    for (table, key), line in where.items():
        assert find_line(text, table, key) == line, (table, key, text)


def test_find_line_skips_a_key_quoted_in_a_string_value():
    """Found by the property above: the value "see b = 3" was taken for the key b."""
    assert find_line('[c]\na = 0\nnote = "see b = 3"  # b = 4\nb = 0\n', "c", "b") == 4


@FAST
@given(toml_docs())
def test_find_line_of_a_table_is_its_header(doc):
    text, where = doc
    lines = text.splitlines()
    for table in {t for t, _ in where}:
        i = find_line(text, table)
        assert lines[i - 1].strip().startswith("[") and lines[i - 1].replace(" ", "").startswith(f"[{table}]")


# ---- coercion of config values ----------------------------------------------------------------
def _raw(**dynamics):
    return {"experiment": {"name": "p", "kind": "test.toy", "title": "t", "source": "s"},
            "model": {"scale": 1.0}, "dynamics": {"n": 3, **dynamics}, "sweep": {"seed": [0]}, "claims": []}


values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=4), st.lists(st.one_of(st.floats(), st.integers(), st.booleans()), max_size=3))


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@FAST
@given(values)
def test_float_field_coercion(v):
    """``delay`` (float): numbers become finite floats; bools, strings, lists, inf/NaN and numbers
    too large for a float are refused with an EoslabError naming the key, nothing else."""
    try:
        exp = load_config("p.toml", raw=_raw(delay=v))
    except EoslabError as e:
        assert "delay" in str(e)
        assert not (_is_number(v) and math.isfinite(float(v)) and abs(v) < 1e300) or v is None
        return
    got = exp.points("quick")[0]["delay"]
    assert _is_number(v) and type(got) is float and got == float(v) and math.isfinite(got)


@FAST
@given(values)
def test_int_field_coercion(v):
    """``n`` (int): integers (not bools, not floats) within the accepted size, else a refusal."""
    try:
        exp = load_config("p.toml", raw=_raw(n=v))
    except EoslabError as e:
        assert "n" in str(e)
        return
    got = exp.points("quick")[0]["n"]
    assert isinstance(v, int) and not isinstance(v, bool) and type(got) is int and got == v


@FAST
@given(values)
def test_list_field_coercion(v):
    """``shift`` (a list of 2 numbers): exactly two finite numbers (no bools), as floats."""
    try:
        exp = load_config("p.toml", raw=_raw(shift=v))
    except EoslabError as e:
        assert "shift" in str(e)
        return
    got = exp.points("quick")[0]["shift"]
    assert isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)
    assert got == [float(x) for x in v] and all(type(x) is float and math.isfinite(x) for x in got)
