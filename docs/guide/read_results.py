"""Read a campaign's results back into your analysis: a table of true versus tagged class.

    python read_results.py runs/wtag

results.jsonl has one JSON line per jet, in the order the jets finished:
  {"id": "W/jet-0123.npy", "ok": true, "prediction": "W", "score": 0.98, "label": "W", "pilot": ..., ...}
  {"id": ..., "ok": false, "error": "..."}            (a jet that could not be classified)
summary.json has the campaign's totals (items, failures by reason, accuracy, latency, pilots).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

run = Path(sys.argv[1])
results = [json.loads(line) for line in (run / "results.jsonl").open()]
summary = json.loads((run / "summary.json").read_text())

ok = [r for r in results if r["ok"]]
failed = [r for r in results if not r["ok"]]
pairs = Counter((r["id"].split("/")[0], r["prediction"]) for r in ok)  # the id starts with the class folder
classes = sorted({c for pair in pairs for c in pair})

print(f"{run}: {len(ok)} jets classified, {len(failed)} failed, accuracy {summary['accuracy']}")
print("true \\ tagged " + "".join(f"{c:>7}" for c in classes))
for true in classes:
    print(f"{true:<14}" + "".join(f"{pairs[true, tagged]:>7}" for tagged in classes))
for pilot in summary["pilots"]:  # one Triton server per node (block); on glideins, the glidein's server
    where = f" on {pilot['host']}, block {pilot['block']}" if pilot.get("host") else ""
    print(f"server {pilot['endpoint']}{where}: {pilot['items']} jets")
for r in failed[:5]:
    print(f"failed: {r['id']}: {r['error']}")
