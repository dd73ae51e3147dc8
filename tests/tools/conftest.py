from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.layout import Layout, build


@pytest.fixture
def data(tmp_path: Path) -> Layout:
    """The data directory of tests/helpers/layout.py, built in tmp_path / "data"."""
    return build(tmp_path / "data")
