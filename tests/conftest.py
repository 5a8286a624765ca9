"""Shared test fixtures: where the repository and the test data are, and float64 mode.

    omniglot_dir   the Omniglot folder of ../shared/data (tests marked `omniglot` are
                   skipped, with the path in the reason, when its omniglot.npz is missing)
    repo_root      the repository root (cwd of subprocess-based tests)
    x64            runs the test with jax_enable_x64 on (float64 references)
"""
import http.server
import socket
import threading
from pathlib import Path

import jax
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
OMNIGLOT_DIR = SHARED_DATA / "omniglot"


def pytest_configure(config):
    config.addinivalue_line("markers", "omniglot: needs the Omniglot npz under ../shared/data")


def pytest_runtest_setup(item):
    if item.get_closest_marker("omniglot") and not (OMNIGLOT_DIR / "omniglot.npz").exists():
        pytest.skip(f"Omniglot npz not found at {OMNIGLOT_DIR}")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    if not (OMNIGLOT_DIR / "omniglot.npz").exists():
        pytest.skip(f"Omniglot npz not found at {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR


@pytest.fixture
def x64():
    """float64 inside the test (restored afterwards)."""
    with jax.enable_x64(True):
        yield


# --- a local file server for the download tests (no test reaches the network) ---

class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    truncate: bool = False


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.truncate:  # the server dies mid-transfer
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server (127.0.0.1, ephemeral port) for download tests: set `server.files`
    {path: bytes}; `server.truncate = True` makes it die mid-transfer. URL: `server.url`."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files = {}
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
