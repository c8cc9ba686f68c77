"""How a Triton server is launched: one plan (pre-step, server process, post-step) per launch mode.

`binary` runs a tritonserver executable (by default the one inside the nvidia-pytriton wheel,
set up as it needs: a backend folder holding the Python stub, and library and PATH order).
`apptainer` follows the originating report (`apptainer instance start --bind <repo>:/models`),
then runs the server inside that instance with `apptainer exec instance://NAME`, so that the
pilot owns a real server process to supervise; `apptainer instance stop` ends it.
`docker` is the report's `docker run --rm --net=host -v <repo>:/models <image> tritonserver ...`.
All three share one set of server flags.

The server's control plane (model repository, shared memory, statistics, trace, logging) answers
only requests that carry the pilot's secret in the `dgaas-pilot-key` header (Triton's
`--http-restricted-api` / `--grpc-restricted-protocol`): any local user reaches the loopback
ports, and a model loaded from an uploaded `model.py` runs code as the pilot's user.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dgaas_flow.errors import PilotError
from dgaas_flow.pilot.settings import TritonSettings

CONTAINER_REPOSITORY = "/models"
SECRET_HEADER = "dgaas-pilot-key"  # lower case: gRPC metadata keys must be
# Triton's API groups that change or reveal the server, not use it; health, metadata, model-config
# and inference stay open for clients on the node (tasks reach their pilot without a token).
RESTRICTED_APIS = ("model-repository", "shared-memory", "statistics", "trace", "logging")


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


@dataclass
class LaunchPlan:
    run: list[str]
    before: list[str] | None = None
    after: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)


# Each Python-backend instance is its own process; numpy's BLAS would start a thread per core in
# every one of them and they would fight over the cores. One thread each, unless the site says
# otherwise; more instances (instance_group count) use more cores.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def math_threads(environ: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    return {var: "1" for var in BLAS_THREADS if var not in environ}


def server_flags(
    repository: str,
    ports: Ports,
    listen: str,
    models: list[str],
    gpus: list[str],
    settings: TritonSettings,
    backend_dir: Path | None = None,
    secret: str | None = None,
) -> list[str]:
    flags = [
        f"--model-repository={repository}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--http-address={listen}",
        f"--grpc-address={listen}",
        f"--metrics-address={listen}",
        f"--exit-timeout-secs={settings.exit_timeout_s}",
    ]
    if backend_dir is not None:
        flags.append(f"--backend-directory={backend_dir}")
    if not settings.auto_complete_config:
        flags.append("--disable-auto-complete-config")
    if models:
        flags.append("--model-control-mode=explicit")
        flags += [f"--load-model={m}" for m in models]
    if not gpus:
        flags += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
    if secret:
        restricted = f"{','.join(RESTRICTED_APIS)}:{SECRET_HEADER}={secret}"
        flags += [f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}"]
    return flags + list(settings.extra_args)


def plan_launch(
    settings: TritonSettings,
    repository: Path,
    models: list[str],
    ports: Ports,
    gpus: list[str],
    name: str,
    secret: str | None = None,
) -> LaunchPlan:
    """The exact commands for a launch mode; unit-tested argv for argv. With `secret`, the
    server's control plane needs it (the pilot always gives one)."""
    if settings.launch == "binary":
        binary, backend_dir, env = binary_installation(settings.binary)
        flags = server_flags(str(repository), ports, settings.listen, models, gpus, settings, backend_dir, secret)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        return LaunchPlan(run=[str(binary), *flags], env={**math_threads(), **env})

    flags = server_flags(CONTAINER_REPOSITORY, ports, settings.listen, models, gpus, settings, secret=secret)
    bind = f"{repository}:{CONTAINER_REPOSITORY}"
    if settings.launch == "apptainer":
        nv = ["--nv"] if gpus else []
        return LaunchPlan(
            before=["apptainer", "instance", "start", *nv, "--bind", bind,
                    *settings.container_options, settings.image, name],
            run=["apptainer", "exec", f"instance://{name}", "tritonserver", *flags],
            after=["apptainer", "instance", "stop", name],
            env={**math_threads(), **({"APPTAINERENV_CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else {})},
        )
    gpu_opts = ["--gpus", f'"device={",".join(gpus)}"'] if gpus else []
    return LaunchPlan(
        run=["docker", "run", "--rm", "--name", name, "--net=host", *gpu_opts, "-v", bind,
             *settings.container_options, settings.image, "tritonserver", *flags],
        after=["docker", "stop", name],
    )


def require_tool(plan: LaunchPlan, mode: str) -> None:
    tool = plan.run[0]
    if shutil.which(tool) is None:
        raise PilotError(
            f"triton.launch is {mode!r} but `{tool}` is not on PATH on {os.uname().nodename}: "
            f"install it there, choose another launch mode, or set triton.binary"
        )


def binary_installation(configured: str | None) -> tuple[Path, Path | None, dict[str, str]]:
    """(tritonserver, backend folder or None, extra environment) for the binary launch mode."""
    if configured:
        path = Path(configured) if "/" in configured else shutil.which(configured)
        if not path or not Path(path).is_file():
            raise PilotError(f"triton.binary: {configured} is not an executable file")
        return Path(path), None, {}
    bundled = _pytriton_root()
    if bundled is not None:
        return _pytriton_installation(bundled)
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path), None, {}
    raise PilotError(
        "no tritonserver found: install the nvidia-pytriton wheel (it bundles the server), put "
        "`tritonserver` on PATH, set triton.binary, or use triton.launch: apptainer|docker"
    )


def _pytriton_root() -> Path | None:
    """Where the nvidia-pytriton wheel keeps its server, found without importing the package
    (a slow import, which every pilot's server start would wait for)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).resolve().parent / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def _pytriton_installation(root: Path) -> tuple[Path, Path, dict[str, str]]:
    """The wheel's server needs three things (see shared notes): the Python stub inside its backend
    folder, this interpreter's libpython first on LD_LIBRARY_PATH, and this environment's python3
    first on PATH (the stub takes its sys.path from it)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise PilotError(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    backend_dir = _backend_dir(root, stub)
    libs = root.parent.parent / "nvidia_pytriton.libs"
    ld_path = [sysconfig.get_config_var("LIBDIR") or "", str(libs), os.environ.get("LD_LIBRARY_PATH", "")]
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in ld_path if p),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    return root / "bin" / "tritonserver", backend_dir, env


def _cache_dir() -> Path:
    """$DGAAS_CACHE_DIR, $XDG_CACHE_HOME/dgaas-flow or ~/.cache/dgaas-flow; batch jobs often have no
    usable home, so the last resort is a per-user folder in the temporary directory."""
    env = os.environ
    candidates = [
        env.get("DGAAS_CACHE_DIR"),
        env.get("XDG_CACHE_HOME") and os.path.join(env["XDG_CACHE_HOME"], "dgaas-flow"),
        env.get("HOME") and os.path.join(env["HOME"], ".cache", "dgaas-flow"),
        os.path.join(tempfile.gettempdir(), f"dgaas-flow-cache-{os.getuid()}"),
    ]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise PilotError("no writable cache folder for the Triton backend links; set DGAAS_CACHE_DIR")


def _backend_dir(root: Path, stub: Path) -> Path:
    """A backends/ folder of symlinks: the wheel's python backend plus the stub for this Python.
    Built once per wheel location and Python version, atomically, in the user's cache."""
    key = hashlib.sha256(f"{root}:{stub}".encode()).hexdigest()[:12]
    cache = _cache_dir()
    target = cache / f"backends-{key}"
    if (target / "python" / "triton_python_backend_stub").exists():
        return target
    tmp = cache / f".backends-{key}.{os.getpid()}"
    (tmp / "python").mkdir(parents=True, exist_ok=True)
    for item in (root / "backends" / "python").iterdir():
        if item.name != "__pycache__":
            (tmp / "python" / item.name).symlink_to(item)
    (tmp / "python" / "triton_python_backend_stub").symlink_to(stub)
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
