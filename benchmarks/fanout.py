"""Fan-out throughput side by side: the server's ceiling, dgaas-flow, the naive baseline and the
Parsl floor, in one run, on the same machine, with the same model and the same prepared items.

    .venv/bin/python benchmarks/fanout.py [--model digits,heavy,jets] [--items 10000,100000] [--workers 2]

For each model and item count (and each worker count of --workers):
  ceiling   a tight raw tritonclient loop (several processes) against a Triton server started by the
            project's pilot; the best protocol, batch size and process count of a short search,
            then whole passes over all the items, timed (for at least --ceiling-min-seconds);
  dgaas     a whole campaign, `dgaas-flow run` in a child process on the local provider (Parsl, the
            pilot, chunking, results.jsonl written): items / campaign wall time, the steady rate
            from results.jsonl sampled every 50 ms, the time to the first result and the driver's
            peak RSS;
  warm      the same campaign run later in a session (`dgaas-flow run warm-up.yaml c1.yaml ...
            cK.yaml`, the warm-up on other items): the block, the pilot and the workers' clients are
            up, as the server is for the ceiling; items / its own campaign time, from its
            summary.json (nothing polls a warm campaign: on 2 cores that slows it); --warm-repeats
            sessions (3) of --warm-campaigns campaigns (5), the median reported;
  naive     what batch jobs do without a shared server: each Parsl task loads the model in-process
            and infers its chunk (the same chunks, the same executor and workers, no Triton);
  floor     empty Parsl tasks per second through the same executor configuration.

Items are `rows` .npy files written once per size under --work. Above --full-max items only the
dgaas and warm paths run (the 1M-item run is there to check that the driver's memory stays flat). Results go
to --results (markdown, JSON, PNG plots); the last line printed is one JSON object.

    .venv/bin/python benchmarks/fanout.py --tune --model heavy   # server settings: max_batch_size, queue delay,
                                                                 # instances, onnxruntime threads
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fanout_parts.locations import DEFAULT_RESULTS, DEFAULT_WORK  # noqa: E402
from benchmarks.fanout_parts.machine import machine  # noqa: E402
from benchmarks.fanout_parts.markdown import write_markdown  # noqa: E402
from benchmarks.fanout_parts.measure import PATHS, run_one  # noqa: E402
from benchmarks.fanout_parts.models import MODELS  # noqa: E402
from benchmarks.fanout_parts.plots import plot  # noqa: E402
from benchmarks.fanout_parts.progress import say  # noqa: E402
from benchmarks.fanout_parts.run import Run  # noqa: E402
from benchmarks.fanout_parts.summary import summary_json  # noqa: E402
from benchmarks.fanout_parts.table import table_lines  # noqa: E402
from benchmarks.fanout_parts.tune import tune, write_tune  # noqa: E402
from dgaas_flow.specs import load_workflow  # noqa: E402


def _ints(text: str) -> list[int]:
    """A comma-separated list of counts; "1e6" is read as 1000000."""
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {n}")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", default="digits,heavy,jets", help="models, comma-separated: digits, heavy, jets")
    p.add_argument("--items", type=_ints, default=[10_000, 100_000],
                   help="item counts, comma-separated (default 10000,100000; add 1000000 for the RSS check)")
    p.add_argument("--workers", type=_ints, default=None,
                   help="Parsl workers per node, comma-separated sweep (default: the workflow's provider)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"paths to run, comma-separated ({', '.join(PATHS)})")
    p.add_argument("--full-max", type=int, default=100_000,
                   help="above this many items only the dgaas and warm paths run (the driver-RSS check)")
    p.add_argument("--chunk-size", type=lambda s: s if s == "auto" else int(s),
                   help="override the workflow's chunk_size (a number, or auto)")
    p.add_argument("--outputs", choices=["jsonl", "parquet"], default="jsonl",
                   help="the campaigns' result format; parquet results are written in parts, so the "
                        "first result, the steady rate and the steady CPU are measured for jsonl only")
    p.add_argument("--ceiling-protocols", default="http,grpc", type=lambda s: s.split(","))
    p.add_argument("--ceiling-batches", type=_ints, default=[64, 256, 0],
                   help="batch sizes the ceiling search tries (0: the model's max_batch_size)")
    p.add_argument("--ceiling-procs", type=_ints, default=[2, 4], help="client processes the search tries")
    p.add_argument("--search-seconds", type=float, default=2.0, help="seconds per ceiling search case")
    p.add_argument("--ceiling-min-seconds", type=float, default=3.0,
                   help="the ceiling's timed run repeats whole passes over the items for at least this long")
    p.add_argument("--warm-repeats", type=_positive, default=3,
                   help="warm sessions per benchmark; the median of all their campaigns is reported")
    p.add_argument("--warm-campaigns", type=_positive, default=5,
                   help="measured campaigns per warm session, after its warm-up")
    p.add_argument("--floor-tasks", type=int, default=500, help="at least this many empty tasks for the floor")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="items and run folders (default runs/bench-fanout)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where the markdown, JSON and plots go")
    p.add_argument("--tag", default="fanout", help="file name prefix of the results")
    p.add_argument("--tune", action="store_true", help="measure server settings instead (see the module docstring)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"--model: unknown {unknown}; choose from {sorted(MODELS)}")
    args.path_set = {x.strip() for x in args.paths.split(",") if x.strip()}
    if args.path_set - set(PATHS):
        p.error(f"--paths: unknown {sorted(args.path_set - set(PATHS))}; choose from {', '.join(PATHS)}")
    args.work, args.results = args.work.resolve(), args.results.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    """Every model, item count and worker count (or --tune); the table, the files, the JSON line."""
    args = parse_args(argv)
    info = {"command": shlex.join(["python", "benchmarks/fanout.py", *(sys.argv[1:] if argv is None else argv)]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    args.results.mkdir(parents=True, exist_ok=True)
    if args.tune:
        for name in args.models:
            MODELS[name].prepare()
            table = tune(MODELS[name], args)
            say(f"wrote {write_tune(name, table, args, info)}")
        print(json.dumps({"benchmark": "fanout-tune", **info}))
        return 0
    runs: list[Run] = []
    for name in args.models:
        case = MODELS[name]
        case.prepare()
        workers = args.workers or [load_workflow(case.workflow).provider.workers_per_node]
        ceilings: dict[int, dict] = {}
        for n in args.items:
            paths = set(args.path_set) if n <= args.full_max else args.path_set & {"dgaas", "warm"}
            for w in workers:
                runs.append(run_one(case, n, w, paths, args, ceilings))  # one ceiling per size
    info["machine"]["loadavg_end"] = list(os.getloadavg())
    for line in table_lines(runs):
        print(line)
    plots = plot(runs, args.results, args.tag)
    summary = summary_json(runs, info)
    (args.results / f"{args.tag}.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_markdown(runs, info, args.results / f"{args.tag}.md", plots)
    say(f"wrote {args.results / (args.tag + '.md')}, {args.results / (args.tag + '.json')}"
        + "".join(f", {p}" for p in plots))
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
