"""The files of a run folder, named once for the code that writes them and the report that reads
them (which must not need Parsl to be imported)."""

RESULTS = "results.jsonl"  # one line per item: its result or its error
PARTS = "results"  # outputs.format parquet: the folder of part-NNNNN.parquet files and their manifest
MANIFEST = "manifest.json"  # in PARTS: the complete parts and their row counts
SUMMARY = "summary.json"  # the campaign's counts, speed, latency, pilots and Triton metrics
TIMELINE = "timeline.jsonl"  # progress about once a second
WORKFLOW = "workflow.json"  # the validated workflow the run used
SCALE = "scale.json"  # a scale test's steps side by side
STEP = "step.json"  # a scale-test step's settings, so a rerun keeps a step only if they did not change
