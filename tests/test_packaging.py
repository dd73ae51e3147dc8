"""What goes to a package index: metadata, licence, a README that renders there, the sdist's
contents, the stable-ABI C core. The build itself is scripts/dist.sh (sdist, manylinux wheel,
twine check, auditwheel show, clean venvs): run here only with COLLECTOR_DIST_TEST=1, as it
needs a package index and about a minute."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_licence_is_apache_2_by_expression_and_file():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    # PEP 639: with a licence expression, licence classifiers are an error for the index
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


def test_metadata_an_index_shows():
    assert PROJECT["description"] and PROJECT["keywords"]
    assert PROJECT["readme"] == "README.md"
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())
    minimum = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"])
    assert minimum
    versions = [int(m.group(1)) for c in PROJECT["classifiers"]
                if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c))]
    assert versions and min(versions) == int(minimum.group(1))


def test_readme_has_no_link_that_breaks_on_an_index():
    # an index renders the README away from the repository: relative links lead nowhere
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)", text) + re.findall(r'(?:src|href)="([^"]+)"', text)
    broken = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert not broken, broken


def test_the_sdist_holds_what_the_tests_use():
    manifest = (ROOT / "MANIFEST.in").read_text().split()
    for path in ("config.toml", "LICENSE"):
        assert path in manifest
    for folder in ("deploy", "bench", "tests"):
        assert f"graft {folder}" in (ROOT / "MANIFEST.in").read_text()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["collector"]
    assert "sample_config.toml" in package_data  # what `collector init` writes


C_PARTS = ["collector/core/_fastbook.c", "collector/runtime/_appender.c"]


def test_one_stable_abi_from_c_to_wheel_tag():
    # each C file's Py_LIMITED_API, setup.py's wheel tag and requires-python say one version
    setup = (ROOT / "setup.py").read_text()
    assert "py_limited_api=True" in setup
    for source in C_PARTS:
        assert source in setup
        limited = re.search(r"#define Py_LIMITED_API 0x03([0-9A-F]{2})0000", (ROOT / source).read_text())
        assert limited, f"{source} is not built for the stable ABI"
        minor = int(limited.group(1), 16)
        assert f'"py_limited_api": "cp3{minor}"' in setup
        assert PROJECT["requires-python"] == f">=3.{minor}"


@pytest.mark.parametrize("source", C_PARTS)
def test_the_built_c_parts_are_abi3_and_have_no_runpath(source):
    try:
        built = importlib.import_module(source.removesuffix(".c").replace("/", "."))
    except ImportError:
        pytest.skip(f"{source} is not built here")
    path = Path(built.__file__ or "")
    assert path.name == Path(source).stem + ".abi3.so", path
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf not installed")
    dynamic = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert "RUNPATH" not in dynamic and "RPATH" not in dynamic, dynamic
    # manylinux_2_17: no symbol of a later glibc (pthread_create is 2.34 since glibc moved it)
    symbols = subprocess.run([readelf, "--dyn-syms", "-W", str(path)], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    needed = {tuple(map(int, v.split("."))) for v in re.findall(r"@GLIBC_(\d+\.\d+(?:\.\d+)?)", symbols)}
    assert needed and max(needed) <= (2, 17), sorted(needed)


@pytest.mark.skipif(os.environ.get("COLLECTOR_DIST_TEST") != "1",
                    reason="builds and checks the distributions with a package index: "
                           "COLLECTOR_DIST_TEST=1 (scripts/dist.sh, about a minute)")
@pytest.mark.timeout(900)
def test_dist_script_builds_and_checks_the_distributions():
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "dist.sh")], capture_output=True,
                          text=True, timeout=880, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASSED" in proc.stdout and "no RUNPATH" in proc.stdout
    assert re.search(r"gemini_collector-\S+-cp311-abi3-\S*manylinux_2_17_x86_64", proc.stdout)
