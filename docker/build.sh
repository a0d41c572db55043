#!/usr/bin/env bash
# Build (and optionally push) every component image of the shrink pipeline, and the serving image.
#
#   docker/build.sh                          # build all images, tag <registry>/<name>:<package version>
#   docker/build.sh --push                   # ... and push them
#   docker/build.sh --config pipelines/configs/clinc150.yaml --push   # registry/tag from the config's `images`
#   docker/build.sh --registry registry.example.com/ml --tag 0.1.0 distill gate   # only some steps
#   docker/build.sh --cpu-only               # skip the GPU (CUDA torch) images
#   docker/build.sh --gpu-on-cpu             # GPU steps' images on CPU torch, for local runs (never pushed)
#   docker/build.sh --dry-run                # print the docker commands, run nothing
#
# Environment: PUSH=1, DRY_RUN=1, REGISTRY, TAG, PLATFORM (default linux/amd64), DOCKER (CLI with BuildKit),
# PYTHON (default .venv/bin/python), ALLOW_DIRTY=1 (push from a tree with uncommitted changes),
# BASE_IMAGE (default python:3.11.13-slim-bookworm; when it cannot be pulled and was not set, a local
# Debian base from docker/base.sh), TORCH_WHEELS (a directory with the torch wheel; default: pip's
# find-links when the PyTorch index cannot be reached), PIP_CERT (CA bundle for pip inside the build,
# default pip's own `cert` setting), NETWORK (build network, default host).
# The engine comes from docker/engine.sh (one that answers, or the project's own).
# Image names, targets and tags come from pipelines/images.py, the same code the compiled
# pipeline uses, so what is pushed is exactly what the pipeline pulls.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PUSH="${PUSH:-0}"
DRY_RUN="${DRY_RUN:-0}"
PLATFORM="${PLATFORM:-linux/amd64}"
DOCKER="${DOCKER:-docker}"
CONFIG=""
REGISTRY="${REGISTRY:-}"
TAG="${TAG:-}"
STEPS=()
CPU_ONLY="${CPU_ONLY:-0}"
GPU_ON_CPU="${GPU_ON_CPU:-0}"
NETWORK="${NETWORK:-host}"
DEFAULT_BASE="python:3.11.13-slim-bookworm"
TORCH_VERSION=2.13.0
CPU_INDEX="https://download.pytorch.org/whl/cpu"
GPU_INDEX="https://download.pytorch.org/whl/cu130"

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --push) PUSH=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --cpu-only) CPU_ONLY=1 ;;
    --gpu-on-cpu) GPU_ON_CPU=1 ;;
    --config) CONFIG="${2:?--config needs a file}"; shift ;;
    --registry) REGISTRY="${2:?--registry needs a value}"; shift ;;
    --tag) TAG="${2:?--tag needs a value}"; shift ;;
    --platform) PLATFORM="${2:?--platform needs a value}"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) STEPS+=("$1") ;;
  esac
  shift
done

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# The plan: "step<TAB>target<TAB>cpu|gpu<TAB>image" per line; errors (e.g. tag 'latest') stop here.
plan_args=()
[[ -n "$CONFIG" ]] && plan_args+=(--config "$CONFIG")
[[ -n "$REGISTRY" ]] && plan_args+=(--registry "$REGISTRY")
[[ -n "$TAG" ]] && plan_args+=(--tag "$TAG")
PLAN="$("$PYTHON" -m pipelines.images "${plan_args[@]}")"
VERSION="$("$PYTHON" -c 'import shrink; print(shrink.__version__)')"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

if [[ ${#STEPS[@]} -gt 0 ]]; then
  for step in "${STEPS[@]}"; do
    if ! cut -f1 <<<"$PLAN" | grep -qx "$step"; then
      echo "error: no image for step '$step' (known: $(cut -f1 <<<"$PLAN" | tr '\n' ' '))" >&2
      exit 2
    fi
  done
fi

if [[ "$PUSH" == 1 && "${ALLOW_DIRTY:-0}" != 1 && -n "$(git status --porcelain 2>/dev/null)" ]]; then
  echo "error: the work tree has uncommitted changes; images pushed as $VERSION would not match any commit" >&2
  echo "       (commit first, or set ALLOW_DIRTY=1 for a throwaway tag)" >&2
  exit 1
fi

run() {
  if [[ "$DRY_RUN" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
die() { echo "error: $*" >&2; exit 1; }

if [[ "$PUSH" == 1 && "$GPU_ON_CPU" == 1 ]]; then
  die "--gpu-on-cpu images carry CPU torch under the GPU steps' names: they are for local runs, never pushed"
fi

# The engine: one that answers, or the project's own (docker/engine.sh; installs docker.io via apt).
if [[ "$DRY_RUN" != 1 ]]; then
  "$ROOT/docker/engine.sh" up >/dev/null || exit 1
  DOCKER_HOST="$("$ROOT/docker/engine.sh" host)" || die "the Docker engine stopped answering"
  if [[ -n "$DOCKER_HOST" ]]; then export DOCKER_HOST; else unset DOCKER_HOST; fi
fi

# A CLI that builds with BuildKit (RUN --mount, secrets): one with the buildx plugin, or Debian's
# docker.io 20.10 CLI, whose built-in BuildKit client needs no plugin (a newer CLI without buildx
# has only the legacy builder, which can mount neither the wheel directory nor the CA secret).
buildkit_cli() {
  local c major
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" buildx version >/dev/null 2>&1; then echo "$c"; return 0; fi
    major="$("$c" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)"
    if [[ "$major" =~ ^[0-9]+$ && "$major" -lt 23 ]]; then echo "$c"; return 0; fi
  done
  return 1
}
if [[ "$DRY_RUN" != 1 ]]; then
  candidates=("$DOCKER")
  [[ "$DOCKER" == docker ]] && candidates+=(/usr/bin/docker)
  DOCKER="$(buildkit_cli "${candidates[@]}")" \
    || die "no Docker CLI with BuildKit: install the buildx plugin, or Debian's docker.io (its CLI has BuildKit built in)"
fi

reachable() { curl -fsS -o /dev/null --max-time 10 "$1" 2>/dev/null; }

# Base image: the pinned default when it is here or can be pulled, else a local one from Debian packages.
if [[ -n "${BASE_IMAGE:-}" ]]; then base_set=1; else base_set=0; BASE_IMAGE="$DEFAULT_BASE"; fi
if [[ "$DRY_RUN" != 1 ]] && ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if ! timeout 120 "$DOCKER" pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
    [[ "$base_set" == 0 ]] || die "base image $BASE_IMAGE is not here and cannot be pulled (docker/base.sh makes a local one)"
    echo "base image $BASE_IMAGE cannot be pulled: using a local Debian base (docker/base.sh)" >&2
    BASE_IMAGE="$(DOCKER="$DOCKER" "$ROOT/docker/base.sh")" \
      || die "no base image: $DEFAULT_BASE cannot be pulled and docker/base.sh failed"
  fi
fi

# A minimal build context: only what `pip install .` needs, never .venv, results or caches.
CONTEXT="$(mktemp -d)"
trap 'rm -rf "$CONTEXT"' EXIT
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' -cf - \
  pyproject.toml README.md shrink components pipelines docker/requirements.txt docker/requirements-serve.txt | tar -C "$CONTEXT" -xf -
mkdir -p "$CONTEXT/docker/wheels"

# torch: from its index, or from a wheel directory (TORCH_WHEELS, else pip's find-links) when the
# index cannot be reached. The wheel is copied into the context's docker/wheels/, which the
# Dockerfile bind-mounts, so it never becomes a layer.
pip_setting() { "$PYTHON" -m pip config get "global.$1" 2>/dev/null || true; }
CPU_ARGS=(--build-arg "TORCH_INDEX_URL=$CPU_INDEX")
if [[ "$DRY_RUN" != 1 ]] && ! reachable "$CPU_INDEX/torch/"; then
  wheels="${TORCH_WHEELS:-${PIP_FIND_LINKS:-$(pip_setting find-links)}}"
  [[ -n "$wheels" ]] || die "the PyTorch index $CPU_INDEX cannot be reached and no wheel directory is set (TORCH_WHEELS=DIR holding torch-$TORCH_VERSION+cpu)"
  [[ -d "$wheels" ]] || die "wheel directory $wheels does not exist (TORCH_WHEELS)"
  wheel="$(find "$wheels" -maxdepth 1 -name "torch-$TORCH_VERSION+cpu-cp311-*linux*x86_64.whl" | head -n1)"
  [[ -n "$wheel" ]] || die "the PyTorch index $CPU_INDEX cannot be reached and $wheels has no torch-$TORCH_VERSION+cpu cp311 Linux wheel"
  cp "$wheel" "$CONTEXT/docker/wheels/"
  echo "torch from $wheel (the PyTorch index cannot be reached)" >&2
  CPU_ARGS=(--build-arg "TORCH_INDEX_URL=")
fi
GPU_OK=1
if [[ "$CPU_ONLY" == 1 ]]; then
  GPU_OK=0
elif [[ "$GPU_ON_CPU" != 1 && "$DRY_RUN" != 1 ]] && ! reachable "$GPU_INDEX/torch/"; then
  GPU_OK=0
  echo "GPU images skipped: they need CUDA torch from the PyTorch index $GPU_INDEX, which cannot be reached" >&2
  echo "  (--gpu-on-cpu builds them on CPU torch for local runs; --build-arg TORCH_INDEX_URL=... names another CUDA index)" >&2
fi

# pip inside the build talks to PyPI itself; behind a TLS-intercepting proxy it needs the proxy's CA.
SECRET_ARGS=()
cert="${PIP_CERT:-$(pip_setting cert)}"
if [[ -n "$cert" && -s "$cert" ]]; then SECRET_ARGS=(--secret "id=pip-cert,src=$cert"); fi

GPU_ARGS=()
if [[ "$GPU_ON_CPU" == 1 ]]; then GPU_ARGS=(--build-arg "GPU_RUNTIME=runtime-cpu"); fi
LOGS="$ROOT/.shrink/docker/logs"
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOGS"

export DOCKER_BUILDKIT=1
built=0
skipped=0
BUILT=()
while IFS=$'\t' read -r step target kind image; do
  if [[ ${#STEPS[@]} -gt 0 && ! " ${STEPS[*]} " =~ [[:space:]]${step}[[:space:]] ]]; then continue; fi
  if [[ "$kind" == gpu && "$GPU_OK" == 0 ]]; then skipped=$((skipped + 1)); continue; fi
  note=""
  if [[ "$kind" == gpu && "$GPU_ON_CPU" == 1 ]]; then note=" on CPU torch"; fi
  echo "==> $step ($kind$note): $image" >&2
  cmd=("$DOCKER" build
    --file "$ROOT/docker/Dockerfile"
    --target "$target"
    --platform "$PLATFORM"
    --network "$NETWORK"
    --build-arg "BASE_IMAGE=$BASE_IMAGE"
    "${CPU_ARGS[@]}" "${GPU_ARGS[@]}" "${SECRET_ARGS[@]}"
    --build-arg "VERSION=$VERSION"
    --build-arg "REVISION=$REVISION"
    --build-arg "CREATED=$CREATED"
    --tag "$image"
    "$CONTEXT")
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${cmd[@]}"
  else
    log="$LOGS/$step.log"
    start=$SECONDS
    if ! "${cmd[@]}" --progress=plain >"$log" 2>&1; then
      # BuildKit prints the failing instruction as ` > [stage n/m] RUN ...:`.
      where="$(grep -E '^ > \[' "$log" | tail -n1 | sed 's/^ > //; s/:$//' | cut -c1-160)"
      why="$(grep -m1 -E '^(ERROR|error)' "$log" | cut -c1-200)"
      die "building $image (step $step, target $target) failed at ${where:-an unknown instruction}: ${why:-see the log} (log: $log)"
    fi
    echo "    built in $((SECONDS - start)) s" >&2
  fi
  if [[ "$PUSH" == 1 ]]; then run "$DOCKER" push "$image"; fi
  BUILT+=("$image")
  built=$((built + 1))
done <<<"$PLAN"

if [[ "$DRY_RUN" != 1 && "$built" -gt 0 ]]; then
  # vfs stores every layer as a full copy: drop the untagged images that rebuilds leave behind.
  "$DOCKER" image prune --force >/dev/null 2>&1 || true
  for image in "${BUILT[@]}"; do
    "$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$image" >&2
  done
fi
summary="$built image(s) $([[ "$DRY_RUN" == 1 ]] && echo planned || echo built)"
[[ "$PUSH" == 1 ]] && summary+=", pushed"
[[ "$skipped" -gt 0 ]] && summary+=", $skipped GPU image(s) skipped"
echo "$summary" >&2
