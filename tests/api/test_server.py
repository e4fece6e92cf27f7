"""The real thing: `heartleaf` commands and a `heartleaf serve` process on a local port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

HEARTLEAF = [sys.executable, "-m", "api.cli"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _heartleaf(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLEAF, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _call(
    url: str, method: str = "GET", body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        problem = json.loads(error.read())
        problem["content_type"] = error.headers["Content-Type"]
        return error.code, problem


@pytest.fixture
def environment(database_url: str, tmp_path: Any) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "HEARTLEAF_DATA_DIR": str(tmp_path)}


@pytest.fixture
def server(environment: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [*HEARTLEAF, "serve", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _call(base + "/healthz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stderr.read() if process.stderr else ""
                pytest.fail(f"heartleaf serve did not start: {output}")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        finally:
            if process.stderr is not None:
                process.stderr.close()


def test_a_served_federation_takes_payments_and_answers_problems(
    environment: dict[str, str], server: str
) -> None:
    created = _heartleaf(environment, "keys", "create", "--role", "federation", "--label", "test")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()

    assert _call(server + "/readyz")[0] == 200
    assert (
        _call(server + "/v1/communities", "POST", {"slug": "riverbend", "name": "Riverbend"}, key)[
            0
        ]
        == 201
    )
    currency = {
        "code": "HRB",
        "kind": "hearts",
        "scale": 2,
        "name": "Hearts",
        "symbol": "♡",
        "issuer": "riverbend",
    }
    assert _call(server + "/v1/currencies", "POST", currency, key)[0] == 201
    # Riverbend issues HRB, so its treasurer (not the federation) opens the issuance account.
    treasurer_key = {"role": "treasurer", "community": "riverbend", "label": "riverbend"}
    treasurer = _call(server + "/v1/keys", "POST", treasurer_key, key)[1]["secret"]
    accounts = [
        _call(
            server + "/v1/accounts",
            "POST",
            {"community": "riverbend", "currency": "HRB", "type": kind, "name": name},
            treasurer,
        )[1]["id"]
        for kind, name in (("issuance", "issuance"), ("member", "ana"), ("member", "bo"))
    ]
    issuance, ana, bo = accounts

    def payment(source: int, destination: int, amount: int) -> dict[str, Any]:
        return {
            "postings": [
                {
                    "source_account_id": source,
                    "destination_account_id": destination,
                    "amount": amount,
                    "currency": "HRB",
                }
            ]
        }

    assert _call(server + "/v1/transactions", "POST", payment(issuance, ana, 5_000), key)[0] == 201
    status, body = _call(server + "/v1/transactions", "POST", payment(ana, bo, 9_000), key)
    assert (status, body["code"], body["account_id"]) == (409, "insufficient_funds", ana)
    assert body["content_type"] == "application/problem+json"
    status, body = _call(server + f"/v1/accounts/{ana}/balance", key=key)
    assert (status, body["posted"], body["available"]) == (200, 5_000, 5_000)
    status, body = _call(server + "/v1/events?after=0&limit=1000", key=key)
    assert [e["kind"] for e in body["items"]].count("transaction.posted") == 1
    assert _call(server + "/v1/accounts")[0] == 401

    with urllib.request.urlopen(server + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert (
        'heartleaf_transactions_total{code="insufficient_funds",outcome="rejected"} 1.0' in metrics
    )
    assert "heartleaf_http_request_duration_seconds_bucket" in metrics


def test_cli_keys_and_verify(environment: dict[str, str]) -> None:
    created = _heartleaf(environment, "keys", "create", "--role", "auditor", "--label", "books")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("hl_")
    listing = _heartleaf(environment, "keys", "list")
    assert "auditor" in listing.stdout
    assert created.stdout.strip() not in listing.stdout  # the secret is never shown again
    revoked = _heartleaf(
        environment,
        "keys",
        "revoke",
        listing.stdout.split()[listing.stdout.split().index("auditor") - 2],
    )
    assert revoked.returncode == 0, revoked.stderr
    verified = _heartleaf(environment, "verify")
    assert verified.returncode == 0, verified.stderr
    assert "sound" in verified.stderr


def test_cli_errors_are_one_line(environment: dict[str, str]) -> None:
    bad = _heartleaf(
        environment,
        "keys",
        "create",
        "--role",
        "treasurer",
        "--community",
        "atlantis",
        "--label",
        "x",
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("heartleaf: error:")
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr
    missing = _heartleaf(environment, "keys", "revoke", "999")
    assert (missing.returncode, len(missing.stderr.strip().splitlines())) == (2, 1)


def test_cli_refuses_an_unmigrated_database(tmp_path: Any) -> None:
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = _heartleaf(environment, "verify")
    assert result.returncode == 2
    assert "heartleaf db upgrade" in result.stderr
    upgraded = _heartleaf(environment, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert _heartleaf(environment, "verify").returncode == 0


def test_every_command_has_help() -> None:
    for command in (
        [],
        ["serve"],
        ["db"],
        ["db", "upgrade"],
        ["demo"],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["verify"],
        ["openapi"],
    ):
        result = subprocess.run(
            [*HEARTLEAF, *command, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "usage: heartleaf" in result.stdout
