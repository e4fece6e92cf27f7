"""Prometheus metrics, one registry per app (so tests can build many apps)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "heartleaf_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "heartleaf_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transactions = Counter(
            "heartleaf_transactions",
            "Transactions posted, and rejected by code.",
            ["outcome", "code"],
            registry=self.registry,
        )

    def transactions_posted(self, count: int) -> None:
        if count:
            self.transactions.labels(outcome="posted", code="").inc(count)

    def transaction_rejected(self, code: str) -> None:
        self.transactions.labels(outcome="rejected", code=str(code)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def install(self, app: FastAPI) -> None:
        @app.middleware("http")
        async def _measure(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            started = time.perf_counter()
            response = await call_next(request)
            route = request.scope.get("route")
            # The route template, not the raw path: /v1/accounts/{account_id}, one series.
            template = getattr(route, "path", "unmatched")
            self.requests.labels(request.method, template, str(response.status_code)).inc()
            self.latency.labels(request.method, template).observe(time.perf_counter() - started)
            return response
