#!/usr/bin/env bash
# deploy/collector.service under a real PID 1: systemd in a podman container (Debian
# bookworm, systemd 252), the unit installed by the very commands README.md gives
# ("Running it as a service"), recording the simulator; then:
#   - `systemctl start` reaches active, which a Type=notify unit does on READY=1;
#   - `systemctl status` shows the STATUS= line;
#   - `systemctl reload` (SIGHUP) adds a symbol;
#   - with the event loop blocked, the watchdog (WatchdogSec) kills it and systemd restarts it;
#   - all of that under the unit's system-call filter and MemoryDenyWriteExecute, with the
#     C core in use (book_core "C");
#   - `systemctl stop` ends it with status 0, and `collector verify` finds the files clean.
#
# Usage: deploy/test-systemd.sh   as root, with podman, runc, debootstrap and a package index.
#                                 Exit 0 passed, 1 failed, 77 podman cannot run systemd here.
# The loop is blocked through a test hook that only this container's venv gets: a .pth file
# whose module makes SIGUSR2 put the main thread (the event loop) to sleep for 120 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=localhost/gemini-collector-systemd:bookworm
RUN=gcst$$
WORK=$(mktemp -d)
C=$RUN-systemd
# shellcheck source=deploy/podman-lib.sh
. "$ROOT/deploy/podman-lib.sh"

cleanup() {
    set +e
    podman rm -f -t 0 "$C" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
podman_setup

in_c() { podman exec "$C" bash -euo pipefail -c "$*"; }
show() { in_c "systemctl show -P $1 collector"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND: until COMMAND succeeds in the container
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until in_c "$*" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || {
            in_c "systemctl status --no-pager collector; journalctl -u collector --no-pager | tail -30" || true
            fail "timed out waiting: $what"
        }
        sleep 1
    done
}

podman image exists "$IMAGE" || build_on_debian "$IMAGE" \
    "Debian bookworm with systemd as PID 1, Python 3.11 and a C compiler" \
    systemd systemd-sysv dbus python3 python3-venv python3-dev gcc libc6-dev ca-certificates procps
# Privileged: the unit's sandboxing (mount namespaces, PrivateUsers, ...) needs what systemd
# on a host has; the container is still its own PID 1, mount and network namespaces.
if ! podman run -d --name "$C" --systemd=always --privileged "$IMAGE" /sbin/init >"$WORK/run.log" 2>&1; then
    echo "podman cannot run systemd here: $(cat "$WORK/run.log")"
    exit 77
fi
deadline=$((SECONDS + 60))
until wait=$(podman exec "$C" systemctl is-system-running --wait 2>&1) || [ "$wait" = degraded ]; do
    if [ $SECONDS -ge $deadline ]; then  # the bus socket comes a moment after PID 1 starts
        echo "systemd did not come up in the container: $wait"
        podman logs "$C" 2>&1 | tail -20
        exit 77
    fi
    sleep 1
done
log "systemd is PID 1 in $C: $(in_c 'systemctl --version | head -1') ($wait)"

# ---- the install, as README.md says ----------------------------------------------------------
# A checkout: the files git knows, as in a fresh clone (plus this working tree's changes).
(cd "$ROOT" && git ls-files -co --exclude-standard -z | tar --null -T - -cf "$WORK/src.tar")
in_c "mkdir -p /root/gemini-collector"
podman cp "$WORK/src.tar" "$C:/root/src.tar"
in_c "tar -C /root/gemini-collector -xf /root/src.tar"
# README.md's install block, in its order; the lines for people (a reader joining the
# group, the editor, following the log) are left out, the editor's work done below.
python3 - "$ROOT/README.md" >"$WORK/install.sh" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
block = re.search(r"Install, from a checkout of\s+this repository.*?```sh\n(.*?)```", text, re.S).group(1)
skip = ("usermod ", "$EDITOR", "${EDITOR", "journalctl ", "systemctl status", "systemctl reload",
        "collector health", "systemctl enable")
for line in block.splitlines():
    line = re.sub(r"\s+#.*$", "", line).strip()
    if line and not line.startswith("#") and not any(s in line for s in skip):
        print(line)
EOF
grep -q "install -m 0644 deploy/collector.service /etc/systemd/system/collector.service" "$WORK/install.sh" \
    || fail "README.md's install block was not found"
log "README.md's install commands:"
sed 's/^/    /' "$WORK/install.sh"
podman cp "$WORK/install.sh" "$C:/root/install.sh"
in_c "cd /root/gemini-collector && bash -euxo pipefail /root/install.sh" >"$WORK/install.log" 2>&1 \
    || { tail -30 "$WORK/install.log"; fail "the README's install commands"; }
log "installed: $(in_c '/opt/collector/.venv/bin/collector --version')"

# what the editor would do: the simulator's symbols and URL, and no metrics port
in_c "sed -i -e 's|^symbols = .*|symbols = [\"BTCUSD\", \"ETHUSD\"]|' \
    -e 's|^# url = .*|url = \"ws://127.0.0.1:8765/v1/marketdata\"|' /etc/collector/config.toml"
in_c "grep -q '^url = \"ws://127.0.0.1:8765' /etc/collector/config.toml" || fail "config edit"
# the test hook (see the top of this file)
in_c "site=\$(/opt/collector/.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])');
cat >\$site/collector_test_hook.py <<'EOF'
# deploy/test-systemd.sh's hook, in its container only: SIGUSR2 blocks the event loop.
import signal
import time

signal.signal(signal.SIGUSR2, lambda *_: time.sleep(120))
EOF
echo 'import collector_test_hook' >\$site/collector_test_hook.pth"
# the exchange: the simulator, as a transient service of its own
in_c "systemd-run --unit=sim --property=DynamicUser=yes \
    /opt/collector/.venv/bin/collector simulate --port 8765 --rate 20 --symbols BTCUSD,ETHUSD,SOLUSD" >/dev/null
wait_for 30 "the simulator" "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8765), 1)'"

# ---- start: active on READY=1 ------------------------------------------------------------------
t0=$SECONDS
in_c "systemctl enable --now collector" >/dev/null 2>&1 || {
    in_c "journalctl -u collector --no-pager | tail -30" || true; fail "systemctl enable --now collector"; }
[ "$(show ActiveState)/$(show SubState)" = active/running ] || fail "not active after start"
in_c "journalctl -u collector --no-pager -o cat | grep '\"event\":\"started\"' | grep -c '\"book_core\":\"C\"'" >/dev/null \
    || fail "no book_core C in the start log (the system-call filter or MemoryDenyWriteExecute?)"
log "systemctl start: active (Type=notify: READY=1 came) in $((SECONDS - t0))s, book_core C"
# the sandbox is in force on the running process, not only written in the unit
sandbox=$(in_c "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/$(show MainPID)/status | tr -s '\t\n' '  '")
[ "$sandbox" = "NoNewPrivs: 1 Seccomp: 2 CapEff: 0000000000000000 " ] \
    || [ "$sandbox" = "CapEff: 0000000000000000 NoNewPrivs: 1 Seccomp: 2 " ] || fail "sandbox: $sandbox"
[ "$(show MemoryDenyWriteExecute)" = yes ] || fail "MemoryDenyWriteExecute is not set"
log "under the unit's system-call filter (Seccomp: 2), MemoryDenyWriteExecute=yes, no capabilities"

# ---- status: the STATUS= line ------------------------------------------------------------------
wait_for 30 "STATUS 2/2 feeds live" "systemctl show -P StatusText collector | grep -c '^2/2 feeds live'"
in_c "systemctl status --no-pager collector" | grep -c 'Status: "2/2 feeds live' >/dev/null || fail "systemctl status"
log "systemctl status: $(in_c 'systemctl status --no-pager collector' | grep 'Status:' | sed 's/^ *//')"

# ---- reload adds a symbol -----------------------------------------------------------------------
pid=$(show MainPID)
in_c "sed -i 's|^symbols = .*|symbols = [\"BTCUSD\", \"ETHUSD\", \"SOLUSD\"]|' /etc/collector/config.toml"
in_c "systemctl reload collector"
wait_for 30 "SOLUSD after reload" "systemctl show -P StatusText collector | grep -c '^3/3 feeds live'"
wait_for 30 "SOLUSD's file" "test -s /var/lib/collector/data/SOLUSD/current.jsonl"
[ "$(show MainPID)" = "$pid" ] || fail "reload restarted the process"
log "systemctl reload: SOLUSD added, same process ($(show StatusText))"

# ---- the watchdog: loop blocked -> killed -> restarted ------------------------------------------
restarts=$(show NRestarts)
t0=$SECONDS
in_c "kill -USR2 $pid"
wait_for 90 "a restart by the watchdog" "[ \$(systemctl show -P NRestarts collector) -gt $restarts ]"
wait_for 30 "active again" "[ \$(systemctl show -P SubState collector) = running ]"
in_c "journalctl -u collector --no-pager | grep -c 'Watchdog timeout'" >/dev/null || fail "no watchdog timeout in the journal"
[ "$(show MainPID)" != "$pid" ] || fail "the same process after a watchdog restart?"
log "watchdog: loop blocked, 'Watchdog timeout' after $((SECONDS - t0))s, restarted ($(show NRestarts) restart)"
wait_for 30 "STATUS 3/3 feeds live after the restart" \
    "systemctl show -P StatusText collector | grep -c '^3/3 feeds live'"

# ---- stop: exit 0, files verified ---------------------------------------------------------------
sleep 2
t0=$SECONDS
in_c "systemctl stop collector"
result="$(show Result) $(show ExecMainStatus)"
[ "$result" = "success 0" ] || { in_c "journalctl -u collector --no-pager | tail -20"; fail "stop: $result"; }
log "systemctl stop: Result=success, exit status 0, in $((SECONDS - t0))s"
in_c "setpriv --reuid=collector --regid=collector --init-groups \
    /opt/collector/.venv/bin/collector verify /var/lib/collector/data" || fail "collector verify"
log "collector verify /var/lib/collector/data (as the collector user): clean"
log "PASS: the unit ran under systemd $(in_c 'systemctl --version | head -1 | cut -d" " -f2') as PID 1"
