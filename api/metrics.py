"""Prometheus metrics, one registry per app (so tests can build many apps)."""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        app.add_middleware(_Measured, metrics=self)


class _Measured:
    """Counts and times every request: plain ASGI, because Starlette's ``BaseHTTPMiddleware``
    costs a task group and two memory streams per request, more than a posting's own work."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            # The route template, not the raw path: /v1/accounts/{account_id}, one series.
            template = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
