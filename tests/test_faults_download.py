"""Fault class 8: the opt-in MNIST download has an overall deadline. A local server on
127.0.0.1 that trickles bytes (each read answered in time, the whole never finished) is
given up on within the deadline, with a clear error and no file left behind."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from minidiff.data import idx
from minidiff.data.idx import load_mnist


class TricklingHandler(http.server.BaseHTTPRequestHandler):
    """Announces a 1 MB file and sends it a few bytes at a time, forever (well: 30 s)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        stop = time.monotonic() + 30
        try:
            while time.monotonic() < stop:
                self.wfile.write(b"\x00" * 8)
                self.wfile.flush()
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what the test wants

    def log_message(self, *args):
        pass


@pytest.fixture
def trickling(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), TricklingHandler) as httpd:
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        httpd.shutdown()
        thread.join()


def test_a_trickling_server_meets_the_deadline_and_leaves_nothing(tmp_path, trickling, monkeypatch):
    monkeypatch.setattr(idx, "DOWNLOAD_DEADLINE", 1.0)
    checksums = {name: "0" * 64 for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")}
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"could not download .*not complete after 1 s"):
        load_mnist(tmp_path, download=True, base_url=trickling, checksums=checksums)
    assert time.monotonic() - start < 10  # the deadline, not the server, ended it
    assert not list(tmp_path.glob("mnist/*")) and not list(tmp_path.glob("mnist/.*"))


def test_the_deadline_is_checked_against_the_published_digest_too(tmp_path, trickling, monkeypatch):
    """With the real MNIST digests (no checksums given) the same: the deadline comes first."""
    monkeypatch.setattr(idx, "DOWNLOAD_DEADLINE", 0.5)
    with pytest.raises(ConnectionError, match="not complete after 0.5 s"):
        load_mnist(tmp_path, download=True, base_url=trickling)
    assert not list(tmp_path.glob("mnist/*"))
