"""Every non-2xx answer is an RFC 9457 problem built here from the one catalogue.

Ledger refusals arrive as ``LedgerError``; request validation errors are mapped to the
ledger code of the rule they break where one exists (an amount of 0 is
``amount_out_of_range`` whether pydantic or the ledger notices), otherwise
``invalid_request``; malformed JSON is ``malformed_body``. Anything unforeseen becomes an
``internal_error`` problem, logged with its traceback, never a bare 500 page.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
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
# Fields of minor units: a decimal sent there is answered with what it is in minor units.
_MINOR_UNIT_FIELDS = {
    "amount", "amounts", "source_amount", "target_amount", "min_balance", "max_balance",
    "circulation_cap", "account_daily", "account_monthly", "community_daily",
    "community_monthly", "credit_limit", "absolute",
}  # fmt: skip
ScaleOf = Callable[[str], int | None]  # a currency's decimal places; None: no such currency


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


def from_validation_error(
    error: RequestValidationError,
    instance: str,
    scale_of: ScaleOf | None = None,
    path_params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The problem for a request pydantic refused, led by its first error. ``scale_of``
    and ``path_params`` let a decimal amount be answered in the currency's minor units."""
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
        return problem(code, sentence, instance=instance)
    if first["loc"] == ("body",) and isinstance(first.get("input"), bytes):
        sentence = "The body must be JSON, sent with Content-Type: application/json."
    if first["type"] == "unstorable_text":  # api.schemas.Strict names the place itself
        place = str(dict(first.get("ctx") or {}).get("where", "")).removeprefix("a key of ")
        where = "" if place == "the body" else place
    decimal = _decimal_amount(first, error.body, scale_of, path_params or {})
    if decimal is not None:
        sentence = f"{where}: {decimal}"
    return problem(code, sentence, field=where or None, errors=listed, instance=instance)


def _decimal_amount(
    error: dict[str, Any], body: object, scale_of: ScaleOf | None, path: Mapping[str, str]
) -> str | None:
    """What a decimal sent as an amount is in minor units, or None if it is not one."""
    value = error.get("input")
    names = [part for part in error["loc"] if isinstance(part, str)]
    if error["type"] != "int_type" or not isinstance(value, float) or not names:
        return None
    if not math.isfinite(value):
        return "amounts are whole numbers of minor units (a JSON integer), not infinite."
    if names[-1] not in _MINOR_UNIT_FIELDS:
        return None
    code = _currency_named(error["loc"], body, path)
    scale = scale_of(code) if scale_of is not None and code is not None else None
    said = f"amounts are whole numbers of minor units (a JSON integer, no decimal point): {value!r}"
    if scale is None:
        return (
            f"{said} of a currency with 2 decimal places is {_in_minor_units(value, 2)}; "
            "multiply by 10 to the power of the currency's decimal places (its scale, in "
            "GET /v1/currencies/{code})."
        )
    return (
        f"{said} {code} is {_in_minor_units(value, scale)}, as {code} has {scale} decimal places."
    )


def _in_minor_units(value: float, scale: int) -> str:
    """``12.5`` at scale 2 is ``1250``; at scale 0 it is no whole number of minor units.
    Display only: the float is read as the shortest decimal that prints as it."""
    minor = Decimal(repr(value)).scaleb(scale)
    below, above = minor.to_integral_value(ROUND_FLOOR), minor.to_integral_value(ROUND_CEILING)
    if below == above:
        return str(int(minor))
    return f"{minor:f} minor units, which is not whole: round it to {below} or {above}"


def _currency_named(
    location: Sequence[int | str], body: object, path: Mapping[str, str]
) -> str | None:
    """The currency an amount field is in, where the request itself names it: beside it
    (``currency``, or ``to_currency`` for a quote's target), else in the path."""
    parent: object = body
    for part in location[1:-1] if location and location[0] == "body" else ():
        if isinstance(parent, dict) and isinstance(part, str):
            parent = parent.get(part)
        elif isinstance(parent, list) and isinstance(part, int) and part < len(parent):
            parent = parent[part]
    name = location[-1] if location else ""
    keys = ["to_currency", "currency"] if name == "target_amount" else ["currency"]
    for key in keys:
        if isinstance(parent, dict) and isinstance(parent.get(key), str):
            return str(parent[key])
    return path.get("code") or path.get("from_currency")


BODY_MAX_BYTES = 16 * 1024 * 1024  # the most of a request body the API reads (api.body_limit)


def too_large_detail() -> str:
    return (
        f"The body is larger than {BODY_MAX_BYTES:,} bytes, the most Heartleaf reads; send a "
        "batch in parts of at most 8,190 transactions, and keep large documents out of metadata."
    )


def _scale_reader(request: Request) -> ScaleOf | None:
    """A currency's decimal places, read from the app's ledger (public to every key)."""
    state = getattr(request.app.state, "heartleaf", None)
    if state is None:
        return None

    def scale_of(code: str) -> int | None:
        try:
            scale: int = state.ledger.get_currency(code).scale
        except (LedgerError, SQLAlchemyError):  # none such, or no database: say it generally
            return None
        return scale

    return scale_of


def _http_detail(request: Request, code: Code, error: StarletteHTTPException) -> str:
    """What an HTTP-level refusal (no route, wrong method, no key) would accept."""
    where = f"{request.method} {request.url.path}"
    if code == Code.NOT_FOUND:
        return f"Nothing answers at {request.url.path}; the routes are listed at /docs."
    if code == Code.METHOD_NOT_ALLOWED:
        allowed = (error.headers or {}).get("Allow") or "other methods"
        return f"{request.url.path} does not accept {request.method}; it accepts {allowed}."
    if code == Code.UNAUTHENTICATED:
        return f"{where} needs an API key: send 'Authorization: Bearer <key>'."
    return f"{where} was refused ({error.status_code}): {error.detail}."


def install(app: FastAPI) -> None:
    @app.exception_handler(LedgerError)
    async def _ledger_error(request: Request, error: LedgerError) -> JSONResponse:
        challenge = {"WWW-Authenticate": "Bearer"} if error.code == Code.UNAUTHENTICATED else None
        return response(from_ledger_error(error, request.url.path), challenge)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        body = await anyio.to_thread.run_sync(
            from_validation_error,
            error,
            request.url.path,
            _scale_reader(request),
            dict(request.path_params),
        )
        return response(body)

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
            else _http_detail(request, code, error)
        )
        return response(problem(code, detail, instance=request.url.path))

    @app.exception_handler(Exception)
    async def _unforeseen(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        detail = (
            f"Heartleaf failed on its side answering {request.method} {request.url.path}; "
            "nothing was written. Retry; if it persists, report it with this time: "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}."
        )
        return response(problem(Code.INTERNAL_ERROR, detail, instance=request.url.path))
