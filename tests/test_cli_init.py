"""`collector init [PATH]`: the commented sample config, never over an existing file; and
`collector run` without a config points to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from collector import config
from collector.cli import main, sample_config

ROOT = Path(__file__).resolve().parents[1]


def collector(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_sample_is_the_repositorys_config_toml():
    # one file to maintain: the package data is a link to it (a copy in a wheel or sdist)
    assert sample_config() == (ROOT / "config.toml").read_bytes()
    link = ROOT / "collector" / "sample_config.toml"
    assert link.is_symlink() and os.readlink(link) == "../config.toml"


def test_init_writes_the_sample_in_an_empty_directory(tmp_path):
    proc = collector("init", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "config.toml"
    assert written.read_bytes() == sample_config()
    assert "config.toml" in proc.stdout and "feed.symbols" in proc.stdout
    assert written.stat().st_mode & 0o777 == 0o644 & ~_umask()
    cfg = config.load(written)  # it validates as written
    assert cfg.feed.symbols and str(cfg.output.dir) == "data"


def test_init_refuses_to_overwrite(tmp_path):
    target = tmp_path / "mine.toml"
    target.write_text("# my config\n")
    proc = collector("init", str(target), cwd=tmp_path)
    assert proc.returncode == 1
    assert str(target) in proc.stderr and "not overwritten" in proc.stderr
    assert target.read_text() == "# my config\n"


def test_init_refuses_a_link_even_a_dangling_one(tmp_path):
    (tmp_path / "config.toml").symlink_to(tmp_path / "elsewhere.toml")
    assert main(["init", str(tmp_path / "config.toml")]) == 1
    assert not (tmp_path / "elsewhere.toml").exists()  # nothing written through the link


def test_init_into_a_directory(tmp_path):
    assert main(["init", str(tmp_path)]) == 0
    assert (tmp_path / "config.toml").read_bytes() == sample_config()
    assert main(["init", str(tmp_path)]) == 1  # and not twice


def test_init_where_it_cannot_create_says_why(tmp_path, capsys):
    assert main(["init", str(tmp_path / "no" / "such" / "dir" / "config.toml")]) == 1
    err = capsys.readouterr().err
    assert "cannot create" in err and "No such file or directory" in err
    assert not (tmp_path / "no").exists()


def test_run_without_a_config_names_init_and_exits_78(tmp_path):
    proc = collector("run", cwd=tmp_path)
    assert proc.returncode == config.EX_CONFIG
    assert "config file not found" in proc.stderr
    assert "collector init config.toml" in proc.stderr


def test_run_with_a_bad_config_does_not_suggest_init(tmp_path):
    (tmp_path / "config.toml").write_text("[feed]\nsymbols = 3\n")
    proc = collector("run", cwd=tmp_path)
    assert proc.returncode == config.EX_CONFIG
    assert "feed.symbols" in proc.stderr and "collector init" not in proc.stderr


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
