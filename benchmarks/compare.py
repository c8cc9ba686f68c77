"""Is a change faster? Warm campaigns of this working tree and of a git revision, in interleaved
sessions on the same prepared items, side by side in one run.

    .venv/bin/python benchmarks/compare.py --base REV [--model digits] [--items 100000]
                                           [--rounds 4] [--campaigns 5]

A warm campaign of 100k digits lasts a sixth of a second, and the shared machine moves one such
sample by a tenth; `fanout.py`'s three warm sessions cannot tell a change of a few percent. Here
each round runs one session per tree (`dgaas-flow run warm-up.yaml c1.yaml ... cK.yaml`: a warm-up
campaign, then K measured ones, as fanout.py's warm path runs them), the trees in turn, and reports
every campaign's `wall_seconds` and the medians. The base tree is a `git worktree` of REV, imported
through PYTHONPATH, removed at the end. Both trees use this tree's benchmark items and workflow
copy (`fanout.py --work`). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fanout_parts.campaign import warm_session  # noqa: E402
from benchmarks.fanout_parts.locations import DEFAULT_WORK  # noqa: E402
from benchmarks.fanout_parts.measure import WARMUP_ITEMS  # noqa: E402
from benchmarks.fanout_parts.models import MODELS, bench_workflow  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the git revision to compare this working tree with")
    p.add_argument("--model", default="digits", choices=sorted(MODELS))
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=4, help="sessions per tree, interleaved")
    p.add_argument("--campaigns", type=int, default=5, help="measured warm campaigns per session")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = p.parse_args(argv)

    case = MODELS[args.model]
    case.prepare()
    items, warmup = args.work / case.name / f"items-{args.items}", args.work / case.name / f"items-{WARMUP_ITEMS}"
    case.write_items(items, args.items)
    case.write_items(warmup, WARMUP_ITEMS)
    workflow = bench_workflow(case, items, 2, args.work / case.name / f"compare-{args.items}", "auto")
    with tempfile.TemporaryDirectory(prefix="dgaas-compare-") as tmp:
        base = Path(tmp) / "base-tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.base], check=True)
        try:
            trees = {"base": base, "this": ROOT}
            walls: dict[str, list[float]] = {name: [] for name in trees}
            for r in range(args.rounds):
                for name, tree in trees.items():
                    seconds = [c["campaign_wall_s"] for c in
                               warm_session(workflow, warmup, Path(tmp) / "runs" / name, args.campaigns, tree)]
                    walls[name] += seconds
                    print(f"round {r + 1} {name:4s} " + " ".join(f"{s * 1000:.0f}" for s in seconds) + " ms",
                          flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    medians = {name: statistics.median(w) for name, w in walls.items()}
    print(f"median warm campaign: base ({args.base}) {medians['base'] * 1000:.1f} ms, this tree "
          f"{medians['this'] * 1000:.1f} ms, this/base {medians['this'] / medians['base']:.3f}")
    print(json.dumps({"benchmark": "compare", "base": args.base, "model": case.name, "items": args.items,
                      "wall_seconds": walls, "median_s": medians, "this_over_base": medians["this"] / medians["base"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
