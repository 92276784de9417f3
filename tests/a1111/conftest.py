"""Fixtures of the real-A1111 tests: one API-only server for the session, one with the gradio
UI for the tests that need it (started on first use); both stopped at the end."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import a1111_host  # noqa: E402


@pytest.fixture(scope="session")
def a1111():
    server = a1111_host.server(ui=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def a1111_ui():
    server = a1111_host.server(ui=True).start()
    yield server
    server.stop()
