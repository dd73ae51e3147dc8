"""Both book cores: the pure-Python reference (`PySide`) and the C one
(`collector.core._fastbook.Side`), for the tests that run on each."""

from __future__ import annotations

import os

import pytest

from collector.core.book import fastbook

REQUIRE_NATIVE = os.environ.get("COLLECTOR_REQUIRE_NATIVE") == "1"
# A skip when the C core is not built, unless it is required: then the test runs and fails.
needs_native = pytest.mark.skipif(
    fastbook is None and not REQUIRE_NATIVE,
    reason="collector.core._fastbook is not built (no C compiler at `pip install`?); "
           "COLLECTOR_REQUIRE_NATIVE=1 makes this a failure")
# for @pytest.mark.parametrize("native", CORES): the Python core, then the C one
CORES = [pytest.param(False, id="python"), pytest.param(True, id="native", marks=needs_native)]
