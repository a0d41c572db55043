"""kfp.local's DockerRunner set up for this project: the DAG's steps in the component images.

``shrink run --runner docker`` runs the same pipeline as the default SubprocessRunner, but every
task starts ``<registry>/shrink-<step>:<tag>`` (the image a cluster pod would run, built by
``make images``) instead of a subprocess of this Python. What kfp.local's DockerRunner does by
itself (``kfp/local/docker_task_handler.py``): it bind-mounts the run's pipeline root at the same
path, streams the logs, and pulls an image it does not find. What it does not, and this module
adds:

* the engine: ``docker/engine.sh up`` (the project's own dockerd when none answers), and
  ``DOCKER_HOST`` for the Docker SDK kfp.local uses;
* the whole ``runs/`` folder, not only this run's root: a cached task's outputs live under the
  root of the run that computed them, and later tasks read them from there;
* local paths named in the config (data source, base model, checkpoints), read-only at the path
  the task will resolve them to, with the working directory set to this one so relative paths
  mean the same inside;
* host networking (the local SeaweedFS listens on 127.0.0.1) and the object store's ``AWS_*``
  variables, which a cluster gets from a Secret and kfp.local ignores;
* the host's UID:GID, so the files tasks write under ``.shrink/runs`` belong to the user, as they
  do with the SubprocessRunner (the images also run as their own UID 10001; see docker/README.md);
* a check that every image is here before the run, with the command that builds it: there is
  no registry to pull from on a machine like this one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from shrink.config import PipelineConfig, to_dict
from shrink.errors import ShrinkError

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "docker" / "engine.sh"
# Passed through to the containers when set here: the object store, threads, offline switches.
PASSED_ENV_PREFIXES = ("AWS_", "SHRINK_")
PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS", "TZ")


def engine_host() -> str:
    """Start (or find) a Docker engine and return its ``DOCKER_HOST`` ("" for the default socket)."""
    if not ENGINE.is_file():  # an installed package without the repo's docker/ folder
        return os.environ.get("DOCKER_HOST", "")
    up = subprocess.run(["bash", str(ENGINE), "up"], capture_output=True, text=True)
    if up.returncode != 0:
        reason = (up.stderr.strip().splitlines() or ["docker/engine.sh up failed"])[-1]
        raise ShrinkError(f"--runner docker needs a Docker engine: {reason.removeprefix('error: ')}")
    host = subprocess.run(["bash", str(ENGINE), "host"], capture_output=True, text=True)
    return host.stdout.strip()


def _local_paths(value: Any) -> set[str]:
    """Strings anywhere in a config section that name an existing local file or folder."""
    if isinstance(value, dict):
        return set().union(*(_local_paths(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_local_paths(v) for v in value)) if value else set()
    if isinstance(value, str) and value and "://" not in value and not value.startswith("hf:"):
        if ("/" in value or value.startswith(".")) and Path(value).exists():
            return {value}
    return set()


def required_images(cfg: PipelineConfig) -> dict[str, str]:
    """Step -> image reference for every step this config's DAG runs."""
    from pipelines.images import image_for
    from pipelines.steps import STEPS

    steps = set(STEPS)
    if not cfg.prune.enabled:
        steps -= {"prune", "prune_structured"}
    elif "structured" not in cfg.prune.methods:
        steps -= {"prune_structured"}
    elif not [m for m in cfg.prune.methods if m != "structured"]:
        steps -= {"prune"}
    return {step: image_for(step, cfg.images) for step in sorted(steps)}


def docker_runner(cfg: PipelineConfig, state_dir: Path, steps: list[str] | None = None):
    """A ``kfp.local.DockerRunner`` for ``cfg``'s DAG (or only ``steps``), engine up and images checked."""
    from docker.types import Mount
    from kfp import local

    import docker
    from pipelines.images import GPU_STEPS

    host = engine_host()
    if host:
        os.environ["DOCKER_HOST"] = host
    try:
        client = docker.from_env()
        present = {tag for image in client.images.list() for tag in image.tags}
        client.close()
    except docker.errors.DockerException as exc:
        where = host or "the default socket"
        raise ShrinkError(f"--runner docker: the Docker engine at {where} fails: {exc}") from None
    wanted = required_images(cfg)
    if steps is not None:
        wanted = {step: ref for step, ref in wanted.items() if step in steps}
    missing = {step: ref for step, ref in wanted.items() if ref not in present}
    if missing:
        gpu = sorted(s for s in missing if s in GPU_STEPS)
        how = "make images" + (" (GPU steps without CUDA wheels: docker/build.sh --gpu-on-cpu)" if gpu else "")
        raise ShrinkError(f"--runner docker: image(s) not built: {', '.join(sorted(missing.values()))}; run {how}")

    runs = (state_dir / "runs").resolve()
    runs.mkdir(parents=True, exist_ok=True)
    mounts = [Mount(target=str(runs), source=str(runs), type="bind")]
    for path in sorted(_local_paths(to_dict(cfg))):
        source = str(Path(path).resolve())
        mounts.append(Mount(target=os.path.abspath(path), source=source, type="bind", read_only=True))
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES) or k in PASSED_ENV}
    return local.DockerRunner(
        network_mode="host",
        user=f"{os.getuid()}:{os.getgid()}",
        working_dir=os.getcwd(),
        mounts=mounts,
        environment=env,
    )
