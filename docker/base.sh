#!/usr/bin/env bash
# Make a local base image from Debian packages, for machines that cannot pull python:*-slim.
#
#   docker/base.sh                     # builds and prints the image name (default shrink-base:bookworm-python<X.Y.Z>)
#   docker/base.sh --tag NAME:TAG      # another name
#
# Why: docker/Dockerfile's default base (python:3.11.13-slim-bookworm) comes from Docker Hub;
# where no image registry answers but Debian's archive does, mmdebstrap builds a minimal
# bookworm root file system with Debian's python3 (3.11, so the same cp311 wheels install) and
# `docker import` turns it into an image. Pass it to the build as --build-arg BASE_IMAGE=...
# (docker/build.sh does so by itself when the default cannot be pulled). Idempotent: an
# existing image of that name is reused. Needs root, mmdebstrap (installed with apt-get when
# missing) and an engine (docker/engine.sh up).
# Environment: DOCKER (CLI, default docker), DEBIAN_SUITE (default bookworm), DEBIAN_MIRROR.
set -euo pipefail

DOCKER="${DOCKER:-docker}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-}"
TAG=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) TAG="${2:?--tag needs NAME:TAG}"; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "error: $*" >&2; exit 1; }

if [[ -z "$TAG" ]]; then
  # The python3.11 version the suite ships names the image, so a rebuilt base after a Debian
  # point release gets a new tag instead of silently changing under an old one.
  pyver="$(apt-cache show --no-all-versions python3.11-minimal 2>/dev/null | sed -n 's/^Version: \([0-9.]*\).*/\1/p' | head -n1)"
  [[ -n "$pyver" ]] || die "cannot tell bookworm's python3.11 version (apt-get update first, or pass --tag)"
  TAG="shrink-base:${SUITE}-python${pyver}"
fi

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG"; exit 0; fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 \
    || die "base image $TAG is missing and mmdebstrap is not installed (apt-get install mmdebstrap)"
  echo "mmdebstrap missing: installing it" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null 2>&1 \
    || die "base image $TAG is missing and 'apt-get install mmdebstrap' failed"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "building base image $TAG from Debian $SUITE packages (mmdebstrap)" >&2
# Docs, man pages and locales are dropped: nothing in an image reads them.
mmdebstrap --variant=minbase --mode=root --quiet \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$SUITE" "$WORK/rootfs.tar" ${MIRROR:+"$MIRROR"} >&2 \
  || die "mmdebstrap could not build the $SUITE root file system for $TAG"
"$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "Debian $SUITE minbase + python3, python3-venv, ca-certificates (docker/base.sh)" \
  "$WORK/rootfs.tar" "$TAG" >/dev/null || die "docker import of $TAG failed"
echo "$TAG"
