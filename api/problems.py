"""Every non-2xx answer is an RFC 9457 problem built here from the one catalogue.

Ledger refusals arrive as ``LedgerError``; request validation errors are mapped to the
ledger code of the rule they break where one exists (an amount of 0 is
``amount_out_of_range`` whether pydantic or the ledger notices), otherwise
``invalid_request``; malformed JSON is ``malformed_body``. Anything unforeseen becomes an
``internal_error`` problem, logged with its traceback, never a bare 500 page.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import CATALOGUE, Code, LedgerError

PROBLEM_TYPE_BASE = "https://heartleaf.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("heartleaf.api")

# Validation errors on these fields mean the ledger rule of the same name.
_RANGE_CODES = {
    "amount": Code.AMOUNT_OUT_OF_RANGE,
    "amounts": Code.AMOUNT_OUT_OF_RANGE,
    "source_amount": Code.AMOUNT_OUT_OF_RANGE,
    "target_amount": Code.AMOUNT_OUT_OF_RANGE,
    "timeout_seconds": Code.TIMEOUT_OUT_OF_RANGE,
    "scale": Code.SCALE_OUT_OF_RANGE,
    "min_balance": Code.LIMITS_INVALID,
    "max_balance": Code.LIMITS_INVALID,
}
_LENGTH_CODES = {
    ("postings", "too_short"): Code.POSTINGS_EMPTY,
    ("postings", "too_long"): Code.POSTINGS_TOO_MANY,
    ("transactions", "too_long"): Code.BATCH_TOO_LARGE,
}
_RANGE_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


def problem(
    code: Code,
    detail: str | None = None,
    *,
    field: str | None = None,
    account_id: int | None = None,
    extra: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    rule = CATALOGUE[code]
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.value,
        "title": rule.sentence,
        "status": rule.http_status,
        "detail": detail or rule.sentence,
        "code": code.value,
        "retryable": rule.retryable,
    }
    optional = {
        "field": field,
        "account_id": account_id,
        "extra": extra,
        "errors": errors,
        "instance": instance,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def from_ledger_error(error: LedgerError, instance: str | None = None) -> dict[str, Any]:
    return problem(
        error.code,
        error.detail,
        field=error.field,
        account_id=error.account_id,
        extra=error.extra or None,
        instance=instance,
    )


def response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        body, status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def field_path(location: Sequence[int | str]) -> str:
    """``("body", "postings", 0, "amount")`` -> ``postings[0].amount``."""
    path = ""
    for part in (
        location[1:]
        if location and location[0] in ("body", "query", "path", "header")
        else location
    ):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _validation_code(error: dict[str, Any]) -> Code:
    if error["type"] == "json_invalid":
        return Code.MALFORMED_BODY
    names = [part for part in error["loc"] if isinstance(part, str)]
    name = names[-1] if names else ""
    if error["type"] in _RANGE_ERRORS and name in _RANGE_CODES:
        return _RANGE_CODES[name]
    kind = (
        "too_short"
        if error["type"] == "too_short"
        else "too_long"
        if error["type"] == "too_long"
        else ""
    )
    return _LENGTH_CODES.get((name, kind), Code.INVALID_REQUEST)


def from_validation_error(error: RequestValidationError, instance: str) -> dict[str, Any]:
    details = list(error.errors())
    listed = [{"field": field_path(item["loc"]), "message": item["msg"]} for item in details]
    first: dict[str, Any] = details[0] if details else {"type": "", "loc": (), "msg": "invalid"}
    code = _validation_code(first)
    where = field_path(first["loc"])
    sentence = f"{where}: {first['msg']}." if where else f"{first['msg']}."
    if code == Code.MALFORMED_BODY:
        context: dict[str, Any] = dict(first.get("ctx") or {})
        sentence = (
            f"The request body is not valid JSON: {context.get('error', 'it cannot be parsed')}."
        )
    if code == Code.MALFORMED_BODY:
        return problem(code, sentence, instance=instance)
    if first["loc"] == ("body",) and isinstance(first.get("input"), bytes):
        sentence = "The body must be JSON, sent with Content-Type: application/json."
    if first["type"] == "unstorable_text":  # api.schemas.Strict names the place itself
        place = str(dict(first.get("ctx") or {}).get("where", "")).removeprefix("a key of ")
        where = "" if place == "the body" else place
    return problem(code, sentence, field=where or None, errors=listed, instance=instance)


BODY_MAX_BYTES = 16 * 1024 * 1024  # the most of a request body the API reads (api.body_limit)


def too_large_detail() -> str:
    return (
        f"The body is larger than {BODY_MAX_BYTES:,} bytes, the most Heartleaf reads; send a "
        "batch in parts of at most 8,190 transactions, and keep large documents out of metadata."
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(LedgerError)
    async def _ledger_error(request: Request, error: LedgerError) -> JSONResponse:
        challenge = {"WWW-Authenticate": "Bearer"} if error.code == Code.UNAUTHENTICATED else None
        return response(from_ledger_error(error, request.url.path), challenge)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return response(from_validation_error(error, request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {
            400: Code.MALFORMED_BODY,  # FastAPI's answer to a body json.loads cannot read
            401: Code.UNAUTHENTICATED,
            404: Code.NOT_FOUND,
            405: Code.METHOD_NOT_ALLOWED,
            413: Code.PAYLOAD_TOO_LARGE,
        }.get(error.status_code, Code.INVALID_REQUEST)
        detail = (
            "The request body is not valid JSON: it is not UTF-8, or nested too deep."
            if code == Code.MALFORMED_BODY
            else too_large_detail()
            if code == Code.PAYLOAD_TOO_LARGE
            else None
        )
        return response(problem(code, detail, instance=request.url.path))

    @app.exception_handler(Exception)
    async def _unforeseen(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return response(problem(Code.INTERNAL_ERROR, instance=request.url.path))
