"""One Prefect test server for every test in tests/flows (PREFECT_HOME is already a temp dir)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(autouse=True, scope="session")
def prefect_harness() -> Iterator[None]:
    # The default 20-30 s startup timeout flakes on a loaded 2-core machine (PrefectHQ/prefect#15075).
    with prefect_test_harness(server_startup_timeout=120):
        yield
