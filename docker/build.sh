#!/usr/bin/env bash
# Build (and optionally push) every component image of the shrink pipeline, and the serving image.
#
#   docker/build.sh                          # build all images, tag <registry>/<name>:<package version>
#   docker/build.sh --push                   # ... and push them
#   docker/build.sh --config pipelines/configs/clinc150.yaml --push   # registry/tag from the config's `images`
#   docker/build.sh --registry registry.example.com/ml --tag 0.1.0 distill gate   # only some steps
#   docker/build.sh --dry-run                # print the docker commands, run nothing
#
# Environment: PUSH=1, DRY_RUN=1, REGISTRY, TAG, PLATFORM (default linux/amd64), DOCKER (default docker),
# PYTHON (default .venv/bin/python), ALLOW_DIRTY=1 (push from a tree with uncommitted changes).
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

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --push) PUSH=1 ;;
    --dry-run) DRY_RUN=1 ;;
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

if [[ "$DRY_RUN" != 1 ]] && ! "$DOCKER" info >/dev/null 2>&1; then
  echo "error: no Docker engine reachable through '$DOCKER' (docker info failed); build where Docker runs" >&2
  exit 1
fi

# A minimal build context: only what `pip install .` needs, never .venv, results or caches.
CONTEXT="$(mktemp -d)"
trap 'rm -rf "$CONTEXT"' EXIT
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' -cf - \
  pyproject.toml README.md shrink components pipelines docker/requirements.txt docker/requirements-serve.txt \
  | tar -C "$CONTEXT" -xf -

export DOCKER_BUILDKIT=1
built=0
while IFS=$'\t' read -r step target kind image; do
  if [[ ${#STEPS[@]} -gt 0 && ! " ${STEPS[*]} " =~ [[:space:]]${step}[[:space:]] ]]; then continue; fi
  echo "==> $step ($kind): $image" >&2
  run "$DOCKER" build \
    --file "$ROOT/docker/Dockerfile" \
    --target "$target" \
    --platform "$PLATFORM" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" \
    --build-arg "CREATED=$CREATED" \
    --tag "$image" \
    "$CONTEXT"
  if [[ "$PUSH" == 1 ]]; then run "$DOCKER" push "$image"; fi
  built=$((built + 1))
done <<<"$PLAN"

echo "$built image(s) $([[ "$DRY_RUN" == 1 ]] && echo planned || echo built)$([[ "$PUSH" == 1 ]] && echo ', pushed')" >&2
