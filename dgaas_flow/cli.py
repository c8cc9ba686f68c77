"""The `dgaas-flow` command. User mistakes end with a message and exit status 2, pilot failures
with exit status 3, blocks the scheduler refuses with exit status 4; never with a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from dgaas_flow.errors import PilotError, ServiceError, UserError
from dgaas_flow.pilot.run import DEFAULT_PILOT_DIR

if TYPE_CHECKING:  # imported where used: light commands start without Parsl
    from dgaas_flow.campaign.session import Session
    from dgaas_flow.specs import Workflow


def _cmd_run(args: argparse.Namespace) -> int:
    from dgaas_flow.campaign import format_summary, run_campaign
    from dgaas_flow.specs import load_workflow

    workflows = [load_workflow(path, provider=args.provider) for path in args.workflow]
    if len(workflows) == 1:
        summary = _until_signalled(lambda stop: run_campaign(workflows[0], out=args.out, limit=args.limit,
                                                             progress=_progress(args), stop=stop))
        print(format_summary(summary))
        return 0 if summary["items_failed"] == 0 else 1
    session = _shared_session(workflows, args.out)

    def run_all(stop: threading.Event) -> list[dict]:
        done = []
        with session:
            for wf in workflows:
                done.append(run_campaign(wf, limit=args.limit, progress=_progress(args), stop=stop, session=session))
                print(format_summary(done[-1]), flush=True)
        return done

    return 0 if all(s["items_failed"] == 0 for s in _until_signalled(run_all)) else 1


def _shared_session(workflows: list[Workflow], out: Path | None) -> Session:
    """The session several workflows run in (its pilots serve all their models), checked before
    any block starts."""
    from dgaas_flow.campaign.session import Session

    if out:
        raise UserError("--out names one run folder; with several workflows each writes to its own "
                        "(outputs.dir, or runs/<name>): set outputs.dir in the workflows instead")
    folders = [wf.out_dir() for wf in workflows]
    if len(set(folders)) < len(folders):
        again = next(f for f in folders if folders.count(f) > 1)
        raise UserError(f"two of the workflows write to {again}: the second would only resume the first; "
                        "give each its own outputs.dir")
    return Session.for_workflows(workflows)


def _cmd_scale_test(args: argparse.Namespace) -> int:
    from dgaas_flow.campaign.scale import BREAK_EVEN_WORKERS, format_scale, run_break_even, run_scale_test
    from dgaas_flow.specs import load_workflow

    wf = load_workflow(args.workflow, provider=args.provider)
    if args.break_even is None:
        scale = _until_signalled(lambda stop: run_scale_test(wf, out=args.out, progress=_progress(args), stop=stop))
    else:
        scale = _until_signalled(lambda stop: run_break_even(
            wf, args.break_even, out=args.out, progress=_progress(args), stop=stop, items=args.items,
            workers=args.clients or BREAK_EVEN_WORKERS))
    print(format_scale(scale))
    return 0 if all(step["failed"] == 0 for step in scale["steps"]) else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from dgaas_flow.report import write_report

    page = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print(f"report: {page}")
    return 0


def _counts(text: str) -> tuple[int, ...]:
    """A growing list of positive counts, e.g. 1,2,4."""
    try:
        counts = tuple(int(n) for n in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1 or list(counts) != sorted(set(counts)):
        raise argparse.ArgumentTypeError(f"expected growing positive counts such as 1,2,4 (got {text!r})")
    return counts


def _progress(args: argparse.Namespace) -> str:
    return "quiet" if args.quiet else args.progress


def _until_signalled(run):
    """Run run(stop) with SIGINT/SIGTERM setting stop; a stop ends as Interrupted (exit 128+signal)."""
    stop = _stop_on_signals()
    try:
        return run(stop)
    except KeyboardInterrupt:
        raise Interrupted(stop.signum) from None  # type: ignore[attr-defined]


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> threading.Event:
    """SIGINT or SIGTERM: the campaign stops submitting at its next safe point (within a second)
    and cancels the blocks (their pilots stop); results so far are kept for a resume. The handler
    only sets a flag: raising inside Parsl's own code could leave a lock held and hang its
    cleanup. A second signal exits at once."""
    stop = threading.Event()
    stop.signum = signal.SIGINT  # type: ignore[attr-defined]

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.signum = signum  # type: ignore[attr-defined]
        stop.set()
        print(f"\n{signal.Signals(signum).name}: stopping blocks and pilots; results so far are kept "
              "(signal again to exit at once)", file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def _cmd_render(args: argparse.Namespace) -> int:
    from dgaas_flow.campaign.session import Session
    from dgaas_flow.sites.executor import render_batch_script
    from dgaas_flow.specs import load_workflow

    wf = load_workflow(args.workflow, provider=args.provider)
    out_dir = wf.out_dir(args.out)
    print(render_batch_script(wf.provider, Session(wf, out_dir).pilot_config_path(), out_dir / "parsl"), end="")
    return 0


def _cmd_glidein_render(args: argparse.Namespace) -> int:
    from dgaas_flow.sites.glideinwms import GlideinSettings, render

    print(render(GlideinSettings(
        model_repository=args.model_repository, models=[m for m in args.models.split(",") if m],
        python=args.python, launch=args.launch, image=args.image, client_image=args.client_image,
    )), end="")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from dgaas_flow.specs import validate_file

    status = 0
    for path in args.files:
        try:
            print(validate_file(Path(path).resolve()))
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
    return status


def _cmd_schema(args: argparse.Namespace) -> int:
    from dgaas_flow.specs import json_schema
    from dgaas_flow.specs.reference import markdown

    print(markdown(args.which) if args.markdown else json.dumps(json_schema(args.which), indent=2))
    return 0


# ------------------------------------------------------------------------------------ pilot


def _pilot_config(args: argparse.Namespace):
    from dgaas_flow.pilot.settings import PilotConfig, TritonSettings
    from dgaas_flow.specs import load_workflow

    state_dir = Path(args.dir).resolve()
    if getattr(args, "config", None):
        try:
            return PilotConfig.model_validate_json(Path(args.config).read_text())
        except OSError as exc:
            raise UserError(f"{args.config}: cannot read pilot config: {exc}") from None
        except ValidationError as exc:
            raise UserError(f"{args.config}: not a pilot config: {exc}") from None
    if args.workflow:
        wf = load_workflow(args.workflow)
        triton, repository, models = wf.triton, wf.model.repository, [wf.model.name]
    elif args.model_repository:
        repository = Path(args.model_repository).resolve()
        if not repository.is_dir():
            raise UserError(f"--model-repository: folder {repository} does not exist")
        missing = [m for m in args.model if not (repository / m).is_dir()]
        if missing:
            raise UserError(f"--model: no model {', '.join(missing)} in {repository}")
        triton, models = TritonSettings(), list(args.model)
    else:
        raise UserError("give --workflow FILE or --model-repository DIR (with --model NAME ...)")
    overrides = {k: getattr(args, k) for k in ("launch", "binary", "image", "listen") if getattr(args, k)}
    if args.ready_timeout:
        overrides["ready_timeout_s"] = args.ready_timeout
    triton = triton.model_copy(update=overrides)
    return PilotConfig(triton=triton, repository=repository, models=models, registry=state_dir,
                       log_dir=state_dir / "logs")


def _serve_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--dir", str(Path(args.dir).resolve())]
    if args.workflow:
        argv += ["--workflow", str(Path(args.workflow).resolve())]
    if args.model_repository:
        argv += ["--model-repository", str(Path(args.model_repository).resolve())]
    for m in args.model:
        argv += ["--model", m]
    for k in ("launch", "binary", "image", "listen", "ready_timeout", "watch_pid"):
        if getattr(args, k):
            argv += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    return argv


def _cmd_pilot_start(args: argparse.Namespace) -> int:
    from dgaas_flow.pilot.run import start_daemon

    config = _pilot_config(args)  # checks the arguments before anything is started
    endpoint, path = start_daemon(_serve_argv(args), Path(args.dir).resolve(), config.triton.ready_timeout_s)
    print(f"pilot ready: http {endpoint.http_url}  grpc {endpoint.grpc_url}  metrics {endpoint.metrics_url}")
    print(f"models: {', '.join(endpoint.models) or '(all in the repository)'}; server pid {endpoint.pid}")
    print(f"export DGAAS_ENDPOINT_FILE={path}")
    return 0


def _cmd_pilot_serve(args: argparse.Namespace) -> int:
    from dgaas_flow.pilot.run import serve

    return serve(_pilot_config(args), watch_pid=args.watch_pid, block=args.block)


def _cmd_pilot_status(args: argparse.Namespace) -> int:
    from dgaas_flow.pilot.run import status

    rows = status(Path(args.dir))
    print(json.dumps(rows, indent=2))
    return 0 if any(r["running"] for r in rows) else 1


def _cmd_pilot_stop(args: argparse.Namespace) -> int:
    from dgaas_flow.pilot.run import stop_all

    print(f"stopped {stop_all(Path(args.dir))} pilot(s)")
    return 0


def _cmd_pilot_wrap(args: argparse.Namespace) -> int:
    from dgaas_flow.pilot.run import wrap

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UserError("pilot wrap: give the command to run after --")
    return wrap(_pilot_config(args), cmd, block=args.block, wait_ready=not args.start_with_server)


def _add_pilot_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workflow", help="take the model and triton settings from this workflow")
    p.add_argument("--model-repository", help="Triton model repository folder")
    p.add_argument("--model", action="append", default=[], help="model to load (repeatable); default all")
    p.add_argument("--launch", choices=["binary", "apptainer", "docker"], help="how Triton runs (default: binary)")
    p.add_argument("--binary", help="tritonserver executable")
    p.add_argument("--image", help="server image for apptainer/docker")
    p.add_argument("--listen", help="address Triton binds (default 127.0.0.1)")
    p.add_argument("--ready-timeout", type=float, help="seconds the server may take to become ready")
    p.add_argument("--dir", default=str(DEFAULT_PILOT_DIR), help="where endpoint files and logs go")


def _add_campaign_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", help="provider profile name or file (overrides the workflow's)")
    p.add_argument("--out", type=Path, help="run folder (default: outputs.dir or runs/<name>)")
    p.add_argument("--progress", choices=["auto", "bar", "log", "quiet"], default="auto",
                   help="auto: a bar on a terminal, a line every 5 s in batch logs; quiet: nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgaas-flow", description="GPU as a service on batch clusters")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning",
                        help="what dgaas-flow's own log (on stderr) shows; progress and summaries are printed anyway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a workflow campaign; several workflows run one after another on the "
                                   "same blocks and pilots")
    p.add_argument("workflow", nargs="+", help="workflow YAML file(s); several run one after another in one session")
    p.add_argument("--limit", type=int, help="only the first N input items")
    _add_campaign_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("scale-test", help="ramp pilots and workers through the workflow's scale_test steps")
    p.add_argument("workflow", help="workflow YAML file")
    p.add_argument("--break-even", type=float, metavar="MS",
                   help="instead of the scale_test steps: ramp client workers against one pilot until Triton's "
                        "queue time per execution crosses MS milliseconds, and report how many clients one "
                        "pilot serves below it")
    p.add_argument("--clients", type=_counts, metavar="N,N,...",
                   help="with --break-even: the client workers of each step, growing (default 1,2,4,...,128)")
    p.add_argument("--items", type=int, default=5000, help="with --break-even: items per step (default %(default)s)")
    _add_campaign_options(p)
    p.set_defaults(func=_cmd_scale_test)

    p = sub.add_parser("report", help="write an HTML report (and PNG figures) of a campaign or scale-test run")
    p.add_argument("run_dir", help="the run folder (holds summary.json or scale.json)")
    p.add_argument("--out", help="the HTML file to write (default: RUN_DIR/report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("render", help="print the batch script one block would submit (nothing is submitted)")
    p.add_argument("workflow", help="workflow YAML file")
    p.add_argument("--provider", help="provider profile name or file (overrides the workflow's)")
    p.add_argument("--out", type=Path, help="run folder (default: outputs.dir or runs/<name>)")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("validate", help="check workflow and provider files")
    p.add_argument("files", nargs="+", help="workflow or provider YAML files")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of a workflow or provider file")
    p.add_argument("which", choices=["workflow", "provider"], help="which file's schema")
    p.add_argument("--markdown", action="store_true", help="the field reference in Markdown (docs/reference/)")
    p.set_defaults(func=_cmd_schema)

    glidein = sub.add_parser("glidein", help="GlideinWMS: start Triton in glideins").add_subparsers(
        dest="glidein", required=True)
    p = glidein.add_parser("render", help="print the factory/frontend entries and the jobs' submit lines")
    p.add_argument("--model-repository", required=True, help="the model repository as seen on the nodes")
    p.add_argument("--models", default="", help="comma list of models to load (default: all)")
    p.add_argument("--python", default=sys.executable, help="a python with dgaas-flow on the nodes")
    p.add_argument("--launch", choices=["apptainer", "binary", "docker"], default="apptainer",
                   help="how the glidein runs Triton")
    p.add_argument("--image", help="Triton server image (default: the script's CVMFS image)")
    p.add_argument("--client-image", help="a light client image for the jobs (mapped by SINGULARITY_IMAGES_DICT)")
    p.set_defaults(func=_cmd_glidein_render)

    pilot = sub.add_parser("pilot", help="run a Triton pilot").add_subparsers(dest="pilot", required=True)
    for name, func, helptext in (
        ("start", _cmd_pilot_start, "start a standalone pilot in the background"),
        ("serve", _cmd_pilot_serve, "run a pilot in the foreground until signalled"),
    ):
        p = pilot.add_parser(name, help=helptext)
        _add_pilot_source(p)
        p.add_argument("--watch-pid", type=int, help="stop the pilot when this process ends (e.g. the glidein)")
        p.set_defaults(func=func)
    p.add_argument("--config", help="pilot config JSON written by a session (its registry is where the endpoint goes)")
    p.add_argument("--block", help="recorded in the endpoint (e.g. `fallback` for a task's local fallback)")
    for name, func, helptext in (
        ("status", _cmd_pilot_status, "show the pilots in --dir"),
        ("stop", _cmd_pilot_stop, "stop the pilots in --dir"),
    ):
        p = pilot.add_parser(name, help=helptext)
        p.add_argument("--dir", default=str(DEFAULT_PILOT_DIR), help="the pilots' folder (default %(default)s)")
        p.set_defaults(func=func)
    p = pilot.add_parser("wrap", help="start a pilot, run CMD with DGAAS_TRITON_URL set, then stop it")
    _add_pilot_source(p)
    p.add_argument("--config", help="pilot config JSON written by a campaign")
    p.add_argument("--block", help="Parsl block id, recorded in the endpoint")
    p.add_argument("--start-with-server", action="store_true",
                   help="start CMD while the server starts, not once it is ready; for commands whose tasks find "
                        "the server through dgaas-flow's discovery, which waits for the endpoint file to say ready")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ...")
    p.set_defaults(func=_cmd_pilot_wrap)

    from dgaas_flow.gateway.cli import add_gateway_commands, add_token_commands

    add_gateway_commands(sub)
    add_token_commands(sub)
    return parser


_LOG_HANDLER = logging.StreamHandler()
_LOG_HANDLER.setFormatter(logging.Formatter("dgaas-flow %(levelname)s %(name)s: %(message)s"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    package = logging.getLogger("dgaas_flow")
    if _LOG_HANDLER not in package.handlers:
        package.addHandler(_LOG_HANDLER)
    package.setLevel(args.log_level.upper())
    _LOG_HANDLER.setLevel(args.log_level.upper())  # also for loggers below that set their own level (a pilot's)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a path the user gave that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {'pilot' if isinstance(exc, PilotError) else 'gateway'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
