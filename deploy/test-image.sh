#!/usr/bin/env bash
# deploy/Dockerfile built and run for real, with podman, the way deploy/compose.yaml runs it:
#   1. build the image (from python:3.11-slim-bookworm when a registry answers, else from a
#      stand-in made with debootstrap from Debian's packages: Debian's python3, venv, pip and
#      headers, plus this machine's CA bundle, which pip needs here);
#   2. run it against the simulator (run from the same image, `collector simulate`) with a
#      read-only root, UID 10001, every capability dropped and no new privileges;
#   3. check that the HEALTHCHECK turns healthy, /metrics answers, and the C core runs
#      (book_core "C" in the start log line);
#   4. check that `podman stop` ends it with status 0 inside the 45 s grace period, and that
#      `collector verify` finds the files on the volume clean;
#   5. the same through podman-compose and deploy/compose.yaml (its build too).
#
# Usage: deploy/test-image.sh     as root, with podman, runc (and debootstrap when no registry
#                                 answers). Exit 0 passed, 1 failed, 77 podman cannot run a
#                                 container here (the reason is printed).
# Env:   COLLECTOR_IMAGE_BASE=IMAGE  build FROM this instead (no pull, no stand-in)
#        COLLECTOR_IMAGE_PULL_S=N    how long to try pulling the real base (default 30)
#        DEBIAN_MIRROR=URL           for debootstrap (default http://deb.debian.org/debian)
# Images are kept for the next run (the stand-in takes about a minute to make); containers,
# networks and volumes of the run are removed. Containers use runc and the rlimits this
# shell has (a sandbox may refuse to raise them), through a containers.conf of its own
# (deploy/podman-lib.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REAL_BASE=docker.io/library/python:3.11-slim-bookworm
STANDIN=localhost/gemini-collector-base-standin:bookworm
IMAGE=localhost/gemini-collector:test
GRACE_S=45          # compose.yaml's stop_grace_period, the unit's TimeoutStopSec
RUN=gcit$$          # the names of this run's containers, network, volumes
WORK=$(mktemp -d)
# shellcheck source=deploy/podman-lib.sh
. "$ROOT/deploy/podman-lib.sh"

cleanup() {
    set +e
    for c in $(podman ps -a --format '{{.Names}}' 2>/dev/null | grep "^$RUN"); do
        podman rm -f -v -t 0 "$c" >/dev/null 2>&1  # -v: the image's VOLUME, anonymous in the simulator
    done
    podman network rm -f "$RUN-net" "${RUN}c_default" >/dev/null 2>&1
    for v in $(podman volume ls -q 2>/dev/null | grep "^$RUN"); do
        podman volume rm -f "$v" >/dev/null 2>&1
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
podman_setup

# ---- 1. the base and the image ------------------------------------------------------------
if [ -n "${COLLECTOR_IMAGE_BASE:-}" ]; then
    base=$COLLECTOR_IMAGE_BASE
elif podman image exists "$REAL_BASE" \
        || timeout "${COLLECTOR_IMAGE_PULL_S:-30}" podman pull -q "$REAL_BASE" >/dev/null 2>&1; then
    base=$REAL_BASE
else
    log "no registry answered: a stand-in for $REAL_BASE"
    podman image exists "$STANDIN" || build_on_debian "$STANDIN" \
        "stand-in for $REAL_BASE: Debian bookworm's python3 (3.11)" \
        python3 python3-venv python3-pip python3-dev python-is-python3 ca-certificates
    base=$STANDIN
fi
log "base image: $base"
# Can a container run here at all? (Not in every sandbox: then this is a skip, not a failure.)
if ! out=$(podman run --rm --network none "$base" true 2>&1); then
    echo "podman cannot run a container here: $out"
    exit 77
fi

# --format docker: the OCI image format has no HEALTHCHECK, and podman would drop it
log "podman build -f deploy/Dockerfile"
podman build -q --pull=never --format docker --build-arg "BASE=$base" -f "$ROOT/deploy/Dockerfile" \
    -t "$IMAGE" "$ROOT" >/dev/null
podman image inspect -f '{{.Config.Healthcheck}}' "$IMAGE" | grep -c 'CMD collector health' >/dev/null \
    || fail "the image has no HEALTHCHECK"

# ---- the checks, for a container however it was started -----------------------------------
# The collector's config: the simulator's two symbols, by its network alias; metrics on.
cat >"$WORK/config.toml" <<'EOF'
[feed]
symbols = ["BTCUSD", "ETHUSD"]
url = "ws://sim:8765/v1/marketdata"
rest_url = "http://sim:8765"
[metrics]
listen = "0.0.0.0:9464"
EOF
chmod 0644 "$WORK/config.toml"

metric() { # metric PORT NAME SYMBOL -> the value of NAME{symbol="SYMBOL"} at /metrics
    python3 - "$@" <<'EOF'
import re, sys, urllib.request
port, name, symbol = sys.argv[1:]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
m = re.search(rf'^{name}{{symbol="{symbol}"}} (\S+)$', text, re.M)
print(m.group(1) if m else "")
EOF
}

check_running() { # check_running CONTAINER HOST_PORT VOLUME
    local c=$1 port=$2 vol=$3 status="" deadline
    # Docker runs the HEALTHCHECK on its own timer; podman needs systemd for that, so it is
    # run here as the timer would, until it passes (the image's start period is 60 s).
    deadline=$((SECONDS + 90))
    while [ $SECONDS -lt $deadline ]; do
        podman healthcheck run "$c" >/dev/null 2>&1 && break
        sleep 2
    done
    status=$(podman inspect -f '{{.State.Healthcheck.Status}}' "$c")
    [ "$status" = healthy ] || { podman logs "$c" 2>&1 | tail -20; fail "$c: health $status"; }
    log "$c: HEALTHCHECK healthy"

    deadline=$((SECONDS + 30)) updates=""
    while [ $SECONDS -lt $deadline ]; do
        updates=$(metric "$port" collector_updates_total BTCUSD 2>/dev/null || true)
        [ -n "$updates" ] && [ "${updates%.*}" -ge 40 ] && break
        sleep 1
    done
    [ -n "$updates" ] && [ "${updates%.*}" -ge 40 ] || fail "$c: /metrics shows too few BTCUSD updates ($updates)"
    log "$c: /metrics answers: collector_updates_total{symbol=\"BTCUSD\"} $updates"

    podman logs "$c" 2>&1 | grep '"event":"started"' | grep -c '"book_core":"C"' >/dev/null \
        || { podman logs "$c" 2>&1 | head -5; fail "$c: no book_core C in the start log"; }
    log "$c: the C core runs (book_core \"C\" in the start log)"
    [ "$(podman inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}' "$c")" = "10001:10001 true" ] \
        || fail "$c: not UID 10001 on a read-only root"
    podman inspect -f '{{.EffectiveCaps}}' "$c" | grep -c '^\[\]$' >/dev/null || fail "$c: capabilities left"
    [ "$(podman exec "$c" sh -c 'id -u; grep NoNewPrivs /proc/1/status')" = "$(printf '10001\nNoNewPrivs:\t1')" ] \
        || fail "$c: not uid 10001 with no_new_privs"
}

check_stopped() { # check_stopped CONTAINER VOLUME STOP-COMMAND...
    local c=$1 vol=$2 t0 took code
    shift 2
    t0=$(date +%s.%N)
    "$@" >/dev/null || fail "$c: $* failed"
    took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
    code=$(podman inspect -f '{{.State.ExitCode}}' "$c")
    [ "$code" = 0 ] || { podman logs "$c" 2>&1 | tail -20; fail "$c: exit status $code after $*"; }
    python3 -c "import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))" "$took" "$GRACE_S" \
        || fail "$c: stopping took ${took}s, not within the ${GRACE_S}s grace period"
    podman logs "$c" 2>&1 | grep -c '"event":"stopped"' >/dev/null || log "$c: (no 'stopped' log line found)"
    log "$c: $* -> exit status 0 in ${took}s (grace period ${GRACE_S}s)"
    podman run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
        -v "$vol:/var/lib/collector:ro" "$IMAGE" verify /var/lib/collector/data \
        || fail "collector verify on the volume $vol"
    log "collector verify on the volume $vol: clean"
}

# ---- 2-4. podman run, as compose.yaml says ------------------------------------------------
podman network create "$RUN-net" >/dev/null
podman volume create "$RUN-data" >/dev/null
podman run -d --name "$RUN-sim" --network "$RUN-net" --network-alias sim --no-healthcheck \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    "$IMAGE" simulate --host 0.0.0.0 --port 8765 --rate 20 >/dev/null
podman run -d --name "$RUN-collector" --network "$RUN-net" \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    --stop-signal SIGTERM --stop-timeout "$GRACE_S" \
    -v "$RUN-data:/var/lib/collector" -v "$WORK/config.toml:/etc/collector/config.toml:ro" \
    -p 127.0.0.1::9464 "$IMAGE" >/dev/null
port=$(podman port "$RUN-collector" 9464/tcp | sed 's/.*://')
log "podman run: collector and simulator up, /metrics on 127.0.0.1:$port"
check_running "$RUN-collector" "$port" "$RUN-data"
check_stopped "$RUN-collector" "$RUN-data" podman stop -t "$GRACE_S" "$RUN-collector"
podman rm -f -v -t 0 "$RUN-sim" "$RUN-collector" >/dev/null

# ---- 5. podman-compose with deploy/compose.yaml -------------------------------------------
if ! command -v podman-compose >/dev/null; then
    fail "podman-compose is not installed (apt-get install podman-compose, or pip install podman-compose)"
fi
cat >"$WORK/compose.test.yaml" <<EOF
# deploy/compose.yaml, plus the simulator it records (started first: the collector's
# reconnect budget is not spent on a name that does not resolve yet)
services:
  collector:
    depends_on: [sim]
  sim:
    image: $IMAGE
    command: ["simulate", "--host", "0.0.0.0", "--port", "8765", "--rate", "20"]
    read_only: true
    cap_drop: [ALL]
    security_opt: ["no-new-privileges:true"]
    healthcheck:
      test: ["NONE"]
EOF
compose() {
    COLLECTOR_CONFIG=$WORK/config.toml podman-compose -p "${RUN}c" -f "$ROOT/deploy/compose.yaml" \
        -f "$WORK/compose.test.yaml" "$@"
}
log "podman-compose build (deploy/compose.yaml's build: section)"
compose --podman-build-args "--format docker --pull=never" build --build-arg "BASE=$base" \
    >"$WORK/compose-build.log" 2>&1 || { tail -20 "$WORK/compose-build.log"; fail "podman-compose build"; }
# the collector and the simulator only: compose.yaml's other services (NATS) come from a
# registry, which may not answer here
compose up -d sim collector >"$WORK/compose-up.log" 2>&1 \
    || { tail -20 "$WORK/compose-up.log"; fail "podman-compose up"; }
c=${RUN}c_collector_1
podman container exists "$c" || { tail -20 "$WORK/compose-up.log"; fail "no container $c"; }
port=$(podman port "$c" 9464/tcp | sed 's/.*://')
log "podman-compose up: collector and simulator up, /metrics on 127.0.0.1:$port"
check_running "$c" "$port" "${RUN}c_collector-data"
# podman-compose 1.0.3 does not read stop_grace_period: its default stop timeout is 10 s
# (and 1 s for `down`), so the grace period is given on the command line.
check_stopped "$c" "${RUN}c_collector-data" compose stop -t "$GRACE_S" collector
# the containers with their anonymous volumes first (podman-compose's down leaves those)
podman rm -f -v -t 0 "$c" "${RUN}c_sim_1" >/dev/null
compose down -v -t 5 >/dev/null 2>&1 || true

log "PASS: the image built and ran as compose.yaml says, with podman and with podman-compose"
