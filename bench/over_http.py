"""Posting over HTTP against a real ``heartleaf serve``.

One server per configuration (SQLite with one worker; PostgreSQL with one and with two),
on a fresh clone of the template, with a federation key (``api.keys.create_key``, what
``heartleaf keys create`` runs).
The phases post consecutive slices of the shared workload: single transfers
(``POST /v1/transactions``) from 1, 8 and 32 concurrent clients, each a thread with its own
keep-alive connection, then batches of 8,190 (``POST /v1/transactions/batch``) from one
client. Latency is per request as the client sees it; throughput is transfers over the
wall time of the phase. At the end every balance is checked against the workload's
expected balances for all the slices posted.

The clients are threads of this process (``http.client``, JSON bodies built before the
clock starts), on the same two cores as the server: what the server sustains with a
real client beside it on the machine, not with the machine to itself.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from api.app import build_ledger
from bench.databases import Databases
from bench.generator import Transfer, expected_deltas, stream
from bench.measure import latency, now, rate, say
from bench.server import Client, Server, create_key, encode
from bench.workload import Federation, chunks
from ledger.database import make_engine

WARMUP_REQUESTS = 20


def run(
    databases: Databases,
    backend: str,
    workers: int,
    federation: Federation,
    single_counts: dict[int, int],
    batch_count: int,
    batch_size: int,
) -> dict[str, Any]:
    """``single_counts``: transfers to post per number of concurrent clients."""
    name = f"http_{backend}_{workers}w"
    url = databases.clone(backend, name)
    key = create_key(url)
    server = Server(url, workers, databases.scratch, name)
    result: dict[str, Any] = {"backend": backend, "workers": workers, "phases": {}}
    offset = 0
    try:
        _warm_up(server.port, key, federation)
        for clients, count in single_counts.items():
            say(f"HTTP {backend} {workers}w: {count:,} single transfers, {clients} clients")
            phase = _singles(
                server.port, key, federation, list(stream(offset, offset + count)), clients
            )
            result["phases"][f"single_{clients}_clients"] = phase
            offset += count
        if batch_count:
            say(
                f"HTTP {backend} {workers}w: {batch_count:,} transfers in batches of {batch_size:,}"
            )
            result["phases"]["batch"] = _batches(
                server.port, key, federation, offset, batch_count, batch_size
            )
            offset += batch_count
        result["server_memory"] = server.peak_memory()
    finally:
        server.stop()
    engine = make_engine(url)
    try:
        result.update(federation.check_balances(build_ledger(engine), expected_deltas(0, offset)))
    finally:
        engine.dispose()
    result["transfers"] = offset
    return result


def _warm_up(port: int, key: str, federation: Federation) -> None:
    client = Client(port, key)
    for index in range(WARMUP_REQUESTS):
        client.call("GET", f"/v1/accounts/{federation.member_ids[index]}/balance")
    client.close()


def _singles(
    port: int, key: str, federation: Federation, transfers: list[Transfer], clients: int
) -> dict[str, Any]:
    bodies = [encode(federation.body(transfer)) for transfer in transfers]
    shares = [bodies[index::clients] for index in range(clients)]
    outcomes: list[tuple[list[float], int, str | None]] = [([], 0, None)] * clients
    start = threading.Barrier(clients + 1)

    def client_thread(index: int) -> None:
        client = Client(port, key)
        client.connection.connect()
        samples, failures, first_failure = [], 0, None
        start.wait()
        for body in shares[index]:
            before = now()
            status, payload = client.call("POST", "/v1/transactions", body)
            samples.append(now() - before)
            if status != 201:
                failures += 1
                first_failure = first_failure or f"{status} {payload[:300]!r}"
        client.close()
        outcomes[index] = (samples, failures, first_failure)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    started = now()
    for thread in threads:
        thread.join()
    elapsed = now() - started
    samples = [sample for outcome in outcomes for sample in outcome[0]]
    failures = sum(outcome[1] for outcome in outcomes)
    return {
        "clients": clients,
        "transfers": len(bodies),
        "seconds": elapsed,
        "tps": rate(len(bodies) - failures, elapsed),
        "latency": latency(samples),
        "failures": failures,
        "first_failure": next((o[2] for o in outcomes if o[2]), None),
    }


def _batches(
    port: int, key: str, federation: Federation, offset: int, count: int, batch_size: int
) -> dict[str, Any]:
    client = Client(port, key)
    samples, created, failures, first_failure = [], 0, 0, None
    for chunk in chunks(offset, offset + count, batch_size):
        body = encode({"transactions": [federation.body(t) for t in chunk], "atomic": False})
        before = now()
        status, payload = client.call("POST", "/v1/transactions/batch", body)
        samples.append(now() - before)
        if status == 200:
            answer = json.loads(payload)
            created += answer["created"]
            failures += answer["rejected"]
        else:
            failures += len(chunk)
            first_failure = first_failure or f"{status} {payload[:300]!r}"
    client.close()
    elapsed = sum(samples)
    return {
        "clients": 1,
        "batch_size": batch_size,
        "transfers": count,
        "created": created,
        "seconds": elapsed,
        "tps": rate(created, elapsed),
        "latency_per_batch": latency(samples),
        "failures": failures,
        "first_failure": first_failure,
    }
