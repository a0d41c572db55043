"""The built component images, checked in a real Docker engine (marker ``docker``).

Where no engine starts (``docker/engine.sh up`` fails: no dockerd and none installable, not
root), every test here is skipped with that reason. Images that are not built are skipped one by
one with the command that builds them: CI builds only ``shrink-prepare-data`` (``.ci/run``),
``make images`` the CPU set, ``docker/build.sh --gpu-on-cpu`` the GPU steps' on CPU torch.

Each image gets one container (with the vfs driver every container start copies the image's
file system, so checks are batched): it starts as UID/GID 10001, imports its component's
module, and answers ``--help`` from KFP's entrypoint (``kfp.dsl.executor_main``) and ``shrink``'s.
CPU images carry no CUDA torch and no ``nvidia-*`` wheels. Then ``prepare_data`` runs in its image
through kfp.local's DockerRunner on a CLINC150 slice and writes the same dataset as in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipelines.images import GPU_STEPS, IMAGES, image_for
from shrink.config import ImagesConfig

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
CHECK = r"""
import importlib, json, os, subprocess, sys
from importlib import metadata
step = os.environ["SHRINK_STEP"]
module = importlib.import_module(f"components.{step}.component")
out = {"uid": os.getuid(), "gid": os.getgid(), "component": hasattr(module, step)}
for name, cmd in (("kfp_help", [sys.executable, "-m", "kfp.dsl.executor_main", "--help"]),
                  ("shrink_help", ["shrink", "--help"])):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out[name] = proc.returncode == 0 and "usage" in proc.stdout.lower()
import torch
out["torch"] = torch.__version__
out["cuda"] = torch.version.cuda
out["nvidia"] = sorted(d.metadata["Name"] for d in metadata.distributions()
                       if (d.metadata["Name"] or "").lower().startswith(("nvidia-", "triton")))
print("CHECK " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def client():
    """A Docker SDK client on the engine docker/engine.sh finds or starts (never installs one here)."""
    docker = pytest.importorskip("docker")
    env = {**os.environ, "SHRINK_DOCKER_INSTALL": os.environ.get("SHRINK_DOCKER_INSTALL", "0")}
    up = subprocess.run(["bash", str(ROOT / "docker" / "engine.sh"), "up"], capture_output=True, text=True, env=env)
    if up.returncode != 0:
        reason = (up.stderr.strip().splitlines() or ["docker/engine.sh up failed"])[-1]
        pytest.skip(f"no Docker engine: {reason}")
    host = subprocess.run(["bash", str(ROOT / "docker" / "engine.sh"), "host"], capture_output=True, text=True)
    if host.stdout.strip():
        os.environ["DOCKER_HOST"] = host.stdout.strip()
    c = docker.from_env()
    yield c
    c.close()


def _image(client, step):
    ref = image_for(step, ImagesConfig())
    if not client.images.list(name=ref):
        how = "docker/build.sh --gpu-on-cpu" if step in GPU_STEPS else "make images"
        pytest.skip(f"{ref} not built ({how} {step})")
    return ref


@pytest.mark.parametrize("step", sorted(IMAGES))
def test_image_runs_its_component_as_uid_10001(client, step):
    ref = _image(client, step)
    config = client.images.get(ref).attrs["Config"]
    assert config["User"] == "10001:10001", f"{ref}: USER is {config['User']!r}"
    assert f"SHRINK_STEP={step}" in config["Env"]
    logs = client.containers.run(ref, ["python3", "-c", CHECK], network_mode="host", remove=True).decode()
    line = next(x for x in logs.splitlines() if x.startswith("CHECK "))
    got = json.loads(line.removeprefix("CHECK "))
    assert (got["uid"], got["gid"]) == (10001, 10001), f"{ref} runs as {got['uid']}:{got['gid']}"
    assert got["component"], f"{ref}: components.{step}.component has no {step}()"
    assert got["kfp_help"] and got["shrink_help"], f"{ref}: an entrypoint does not answer --help: {got}"
    assert got["torch"].startswith("2.13.0")
    labels = client.images.get(ref).labels
    if step not in GPU_STEPS or labels.get("dev.shrink.accelerator") == "none":
        assert got["cuda"] is None and not got["nvidia"], f"{ref}: CPU image carries CUDA: {got}"
    else:
        assert got["cuda"], f"{ref}: GPU image without CUDA torch"


def test_prepare_data_runs_in_its_image(client, tmp_path, slice_config):
    """One component through kfp.local's DockerRunner: the CLINC150 slice, mounted read-only, in the image."""
    _image(client, "prepare_data")
    from kfp import local

    from components.prepare_data.component import prepare_data
    from pipelines.docker_runner import docker_runner
    from shrink.config import PipelineConfig, to_dict

    cfg = PipelineConfig(data=slice_config)
    runner = docker_runner(cfg, tmp_path / "state", steps=["prepare_data"])
    local.init(runner=runner, pipeline_root=str(tmp_path / "state" / "runs" / "one"), raise_on_error=True)
    try:
        task = prepare_data(data=to_dict(slice_config))
    finally:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "sub"))
    out = Path(task.outputs["dataset"].path)
    info = json.loads((out / "shrink-data.json").read_text())
    assert sorted(info["label_names"]) == sorted(slice_config.labels)
    assert task.outputs["dataset"].metadata["labels"] == len(slice_config.labels)
