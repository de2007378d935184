"""Start the real stepkto binary on a free port with a throwaway SQLite database.

The binary is $STEPKTO_BIN, else target/debug/stepkto (built by `cargo test`)."""

import os
import pathlib
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("STEPKTO_BIN", str(ROOT / "target" / "debug" / "stepkto"))
    if not os.path.exists(binary):
        pytest.fail(f"no stepkto binary at {binary}: run `cargo build` or set STEPKTO_BIN")
    tmp = tempfile.mkdtemp(prefix="stepkto-py-")
    port = _free_port()
    log = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--addr", f"127.0.0.1:{port}", "--database-url", f"sqlite://{tmp}/db.sqlite",
         "--jobs-dir", f"{tmp}/jobs", "--max-jobs", "0"],
        stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the server did not start; see " + log.name)
        time.sleep(0.05)
    os.environ["STEPKTO_URL"] = url
    yield url
    proc.kill()
    proc.wait()
