"""A ceiling on request bodies, before anything reads them.

A body larger than ``BODY_MAX_BYTES`` is answered 413 ``payload_too_large``: at once when
its ``Content-Length`` says so, and as soon as a chunked body passes the ceiling
otherwise, so no request makes the server hold more than that in memory. The ceiling fits
the largest batch (8,190 transactions with their postings and metadata) with room.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from api.problems import BODY_MAX_BYTES, too_large_detail
from ledger.errors import Code


def _problem(scope: Scope) -> Any:
    return problems.response(
        problems.problem(Code.PAYLOAD_TOO_LARGE, too_large_detail(), instance=scope.get("path"))
    )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = BODY_MAX_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _problem(scope)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # The app answers it as a problem (api.problems maps 413).
                    raise HTTPException(413)
            return message

        await self.app(scope, counted, send)
