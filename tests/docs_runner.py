"""Runs documentation blocks as a user would paste them (used by tests/test_docs.py; not a test
module). ``python docs_runner.py BLOCKS.json RESULTS.json``: BLOCKS is a list of
``{"id", "lang", "code", "fresh"}``; python blocks are executed in this interpreter (imports are
shared, so a block costs its own work only), each in a new namespace when ``fresh`` (a markdown
block must run on its own) or in the notebook's shared namespace otherwise; bash blocks run with
``bash -euo pipefail`` in the same working directory. Each result: ok, seconds, error text."""

import json
import os
import subprocess
import sys
import time
import traceback

blocks = json.load(open(sys.argv[1]))
results = {}
shared = {"__name__": "__main__"}
for b in blocks:
    t0 = time.perf_counter()
    err = None
    try:
        if b["lang"] == "python":
            ns = {"__name__": "__main__"} if b["fresh"] else shared
            exec(compile(b["code"], b["id"], "exec"), ns)
        else:
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", b["code"]], capture_output=True, text=True,
                               timeout=b.get("timeout", 600))
            if r.returncode != 0:
                err = f"exit code {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    except BaseException:  # noqa: BLE001 - every failure is reported, the next block still runs
        err = traceback.format_exc()[-6000:]
    results[b["id"]] = {"ok": err is None, "seconds": time.perf_counter() - t0, "error": err}
    json.dump(results, open(sys.argv[2], "w"))
    print(f"{b['id']}: {'ok' if err is None else 'FAILED'} {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)
