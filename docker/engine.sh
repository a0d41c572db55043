#!/usr/bin/env bash
# A Docker engine the project starts and stops itself, as it does the SeaweedFS store.
#
#   docker/engine.sh up        # start one (or use the one that already answers); prints DOCKER_HOST=...
#   docker/engine.sh status    # which engine answers; exit 1 when none does
#   docker/engine.sh host      # just the DOCKER_HOST value to use (empty: the default socket); exit 1 if none
#   docker/engine.sh down      # stop the engine this script started (never someone else's)
#
# An engine that already answers (DOCKER_HOST, or the default /var/run/docker.sock) is used as it
# is and never stopped. Otherwise `up` runs Debian's dockerd as root with the settings a container
# sandbox allows: --storage-driver=vfs (no overlayfs inside overlayfs), no iptables and no bridge,
# so containers and builds use --network host. Its data stays under .shrink/docker/ (gitignored);
# its socket and exec root go under /tmp (unix socket paths are limited to 108 bytes).
# When dockerd is missing and apt-get can install it (root), `up` installs the docker.io package.
# Environment: SHRINK_STATE (default .shrink), SHRINK_DOCKER_INSTALL=0 (never apt-get install).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$(cd "$ROOT" && mkdir -p "${SHRINK_STATE:-.shrink}" && cd "${SHRINK_STATE:-.shrink}" && pwd)/docker"
RUN_DIR="/tmp/shrink-docker-$(printf '%s' "$STATE" | sha256sum | cut -c1-10)"
SOCK="$RUN_DIR/docker.sock"
OURS="unix://$SOCK"
PIDFILE="$RUN_DIR/dockerd.pid"
LOG="$STATE/dockerd.log"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 1; }

# Any docker CLI can ask a daemon whether it answers (the API version is negotiated).
cli() { command -v docker || command -v /usr/bin/docker || true; }

answers() {  # answers HOST ("" = the CLI's default): the daemon replies to `docker info`
  local docker; docker="$(cli)"
  [[ -n "$docker" ]] || return 1
  if [[ -n "$1" ]]; then DOCKER_HOST="$1" timeout 20 "$docker" info >/dev/null 2>&1
  else env -u DOCKER_HOST timeout 20 "$docker" info >/dev/null 2>&1; fi
}

# The engine to use, in order: ours, the caller's DOCKER_HOST, the default socket. Prints the host.
find_engine() {
  if [[ -S "$SOCK" ]] && answers "$OURS"; then echo "$OURS"; return 0; fi
  if [[ -n "${DOCKER_HOST:-}" && "${DOCKER_HOST}" != "$OURS" ]] && answers "$DOCKER_HOST"; then
    echo "$DOCKER_HOST"; return 0
  fi
  if [[ -z "${DOCKER_HOST:-}" || "${DOCKER_HOST}" == "$OURS" ]] && answers ""; then echo ""; return 0; fi
  return 1
}

install_dockerd() {
  command -v dockerd >/dev/null 2>&1 && return 0
  local how="install Debian's docker.io (apt-get install docker.io) or point DOCKER_HOST at a running engine"
  [[ "${SHRINK_DOCKER_INSTALL:-1}" != 0 ]] || die "no Docker engine answers and dockerd is not installed; $how"
  command -v apt-get >/dev/null 2>&1 || die "no Docker engine answers, dockerd is missing and there is no apt-get; $how"
  [[ "$(id -u)" == 0 ]] || die "no Docker engine answers and dockerd is missing; installing it needs root; $how"
  echo "dockerd missing: installing Debian's docker.io" >&2
  # One update (lists may be stale or absent on a fresh machine), then the package; policy-rc.d keeps
  # the package from starting the system service, which would collide with nothing but is not ours.
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1 \
    || die "no Docker engine answers and 'apt-get install docker.io' failed; $how"
  command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is not on PATH; $how"
}

up() {
  local host
  if host="$(find_engine)"; then echo "DOCKER_HOST=$host"; return 0; fi
  install_dockerd
  [[ "$(id -u)" == 0 ]] || die "no Docker engine answers and starting dockerd needs root (or a rootless engine in DOCKER_HOST)"
  mkdir -p "$STATE/data" "$RUN_DIR"
  rm -f "$SOCK"
  # setsid: the daemon outlives this shell and the caller's process group (make, CI steps).
  setsid nohup dockerd \
    --host "$OURS" \
    --data-root "$STATE/data" \
    --exec-root "$RUN_DIR/exec" \
    --pidfile "$PIDFILE" \
    --storage-driver vfs \
    --iptables=false --ip6tables=false --bridge=none \
    >"$LOG" 2>&1 </dev/null &
  local i
  for i in $(seq 1 60); do
    if [[ -S "$SOCK" ]] && answers "$OURS"; then
      echo "$OURS" >"$STATE/host"
      echo "DOCKER_HOST=$OURS"
      return 0
    fi
    if ! kill -0 "$!" 2>/dev/null; then
      die "dockerd exited at start: $(grep -m1 -iE 'level=(fatal|error)|failed' "$LOG" || tail -n1 "$LOG") (log: $LOG)"
    fi
    sleep 1
  done
  die "dockerd did not answer within 60 s (log: $LOG)"
}

down() {
  if [[ ! -f "$PIDFILE" ]]; then echo "no engine of ours is running"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    local i
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && die "dockerd ($pid) did not stop within 30 s"
  fi
  rm -f "$PIDFILE" "$SOCK" "$STATE/host"
  echo "stopped the engine (data kept in $STATE/data)"
}

status() {
  local host
  if host="$(find_engine)"; then
    local what="another engine (not stopped by 'down')"
    [[ "$host" == "$OURS" ]] && what="ours, data in $STATE/data"
    echo "up: DOCKER_HOST=${host:-<default socket>} ($what)"
    return 0
  fi
  echo "down: no Docker engine answers (docker/engine.sh up starts one)"
  return 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  host) find_engine ;;
  -h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac
