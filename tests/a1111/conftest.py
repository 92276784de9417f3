"""Fixtures of the real-A1111 tests: one API-only server for the session, one with the gradio
UI for the tests that need it (started on first use); both stopped at the end."""
import pytest

import a1111_host


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
