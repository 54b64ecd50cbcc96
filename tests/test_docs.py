"""Docs that run: every ```python and ```bash block of README.md and docs/*.md, and every code
cell of docs/*.ipynb, is executed as written, in a temporary directory, by a fresh interpreter
(float64 off, as in a user's program).

Conventions: ``<!-- slow -->`` on the line just before a fence: the block runs only under
``-m slow``; ``<!-- skip: REASON -->``: never run here (only README's install lines, which
.ci/run itself runs). Markdown blocks run each in a new namespace (a pasted example must stand
on its own) and in file order (a bash block may write files a later block reads); a notebook's
cells share one namespace, as in Jupyter. One interpreter per file and mode: the cost of a block
is its own work."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).parent / "docs_runner.py"
FENCE = re.compile(r"^```(\w+)\s*$")
MARK = re.compile(r"^<!--\s*(slow|skip)\b(?::\s*(.*?))?\s*-->\s*$")


def doc_files():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "docs").glob("*.ipynb"))]


def blocks_of(path: Path) -> list[dict]:
    """The runnable blocks of a markdown file or notebook: id (``file:line``), lang, code, mark."""
    rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text())
        out = []
        for i, cell in enumerate(nb["cells"]):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if cell["cell_type"] == "code" and src.strip():
                mark = "slow" if src.lstrip().startswith("# slow") else None
                out.append({"id": f"{rel}:cell{i}", "lang": "python", "code": src, "mark": mark, "fresh": False})
        return out
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mk = MARK.match(prev.strip())
        if lang in ("python", "bash"):
            out.append({"id": f"{rel}:{start + 1}", "lang": lang, "code": "\n".join(lines[start + 1:j]) + "\n",
                        "mark": mk.group(1) if mk else None, "reason": mk.group(2) if mk else None, "fresh": True})
        i = j + 1
    return out


ALL = [b for f in doc_files() for b in blocks_of(f)]
_RUNS: dict = {}


def _run_file(rel: str, slow: bool, tmp_path_factory) -> dict:
    """Run the blocks of one file (the slow ones too when ``slow``) once; results by block id."""
    key = (rel, slow)
    if key not in _RUNS:
        todo = [b for b in ALL if b["id"].rsplit(":", 1)[0] == rel and b["mark"] != "skip"
                and (slow or b["mark"] != "slow")]
        work = tmp_path_factory.mktemp("docs")
        (work / "blocks.json").write_text(json.dumps(todo))
        env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("MPLBACKEND", "Agg")
        env["COLUMNS"] = "200"
        r = subprocess.run([sys.executable, str(RUNNER), str(work / "blocks.json"), str(work / "results.json")],
                           cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        res = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
        for b in todo:
            res.setdefault(b["id"], {"ok": False, "seconds": 0.0,
                                     "error": f"runner died (exit {r.returncode}):\n{r.stderr[-3000:]}"})
        _RUNS[key] = res
    return _RUNS[key]


def _param(b):
    # All blocks of one file on one pytest-xdist worker: the file's blocks run in one interpreter, once.
    marks = [pytest.mark.xdist_group(b["id"].rsplit(":", 1)[0])]
    if b["mark"] == "slow":
        marks.append(pytest.mark.slow)
    if b["mark"] == "skip":
        marks.append(pytest.mark.skip(reason=b.get("reason") or "marked skip"))
    return pytest.param(b, id=b["id"], marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in ALL])
def test_doc_block_runs(block, tmp_path_factory):
    rel = block["id"].rsplit(":", 1)[0]
    res = _run_file(rel, block["mark"] == "slow", tmp_path_factory)[block["id"]]
    assert res["ok"], f"{block['id']} ({block['lang']}) failed:\n{block['code']}\n{res['error']}"


def test_collector_finds_the_blocks_and_skips_only_the_install_lines(tmp_path):
    ids = {b["id"] for b in ALL}
    assert any(i.startswith("README.md:") for i in ids) and any(i.startswith("docs/networks.md:") for i in ids)
    skipped = [b for b in ALL if b["mark"] == "skip"]
    assert [b["id"].split(":")[0] for b in skipped] == ["README.md"]  # the install lines, which .ci/run runs
    assert "pip install" in skipped[0]["code"] and skipped[0] is next(b for b in ALL if b["id"].startswith("README"))
    # The marker grammar itself.
    sample = tmp_path / "probe.md"
    sample.write_text("x\n<!-- slow -->\n```python\nprint(1)\n```\n\n```bash\necho 2\n```\n```text\nno\n```\n")
    got = blocks_of(sample)
    assert [(b["lang"], b["mark"]) for b in got] == [("python", "slow"), ("bash", None)]
