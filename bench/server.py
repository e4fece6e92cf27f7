"""A real ``heartleaf serve`` process on a free local port, and its keys and memory.

The server is the console script a user runs (``heartleaf serve --workers N
--no-access-log --log-level warning``) with ``DATABASE_URL`` pointing at the run's database.
Its peak resident memory is read from ``/proc/<pid>/status`` (``VmHWM``) of the process and
of its workers when it runs more than one.

With ``--workers 2`` uvicorn's supervisor binds the listening socket with ``proto`` 0, and
asyncio's own loop would then leave ``TCP_NODELAY`` off on the accepted sockets: every
keep-alive request after the first would wait ~40 ms for the client's delayed ACK (uvicorn
issue #3149). Heartleaf depends on uvloop, which uvicorn picks when present and which sets
``TCP_NODELAY`` on every TCP connection; the two-worker rows show no such wait (p50 within
a millisecond or two of one worker's). ``report`` notes it beside those rows.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from api import keys as key_store
from bench.measure import peak_rss_mib, process_tree
from bench.workload import Scratch
from ledger.database import make_engine
from ledger.service import utc_now

START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 20


def heartleaf_command() -> list[str]:
    script = Path(sys.executable).parent / "heartleaf"
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


def environment(database_url: str, scratch: Scratch) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "HEARTLEAF_DATA_DIR": str(scratch.heartleaf_data),
    }


def create_key(database_url: str) -> str:
    """A federation key, made by what ``heartleaf keys create`` runs (in-process: a second
    of interpreter start saved per server)."""
    engine = make_engine(database_url)
    try:
        _record, secret = key_store.create_key(
            engine, role=key_store.Role.FEDERATION, community=None, label="bench", now=utc_now()
        )
    finally:
        engine.dispose()
    return secret


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, database_url: str, workers: int, scratch: Scratch, log_name: str) -> None:
        self.port = free_port()
        self.workers = workers
        self.log_path = scratch.logs / f"server-{log_name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                *heartleaf_command(),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=environment(database_url, scratch),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"heartleaf serve exited; see {self.log_path}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                connection.close()
                # With several workers, one answering does not mean all have started: wait
                # for every worker process, then give the last one a moment to load the app.
                if response.status == 200 and (
                    self.workers == 1 or len(process_tree(self.process.pid)) > self.workers
                ):
                    time.sleep(0 if self.workers == 1 else 2)
                    return
            except (ConnectionError, OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"heartleaf serve did not answer; see {self.log_path}")
            time.sleep(0.1)

    def peak_memory(self) -> dict[str, Any]:
        tree = process_tree(self.process.pid)
        memory = peak_rss_mib(tree)
        # With workers, the supervisor only watches; the workers hold the app.
        memory["processes"] = len(tree)
        return memory

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Client:
    """One keep-alive connection, as one client of the API would hold."""

    def __init__(self, port: int, key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """``body``: JSON-able, or bytes already encoded (so encoding stays off the clock)."""
        payload = body if body is None or isinstance(body, bytes) else encode(body)
        self.connection.request(method, path, body=payload, headers=self.headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
