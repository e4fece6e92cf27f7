"""Ugly requests get problems, never a 500, and never leave a trace.

Each table row is one request a careless or hostile client might send, with the status
and stable code it must get back. The walk sends the rows in order against one small
federation (with an exchange) on each database and, after every row, checks that the
answer is an RFC 9457 problem and that no row of any table changed: directory, accounts
and balances, transactions and history, events, keys, exchange rules, quotes and stored
replay answers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import Engine, inspect, text

from exchange.model import ProtocolSpec
from exchange.service import Exchange
from ledger.model import CurrencyKind
from ledger.service import Ledger
from tests.api.conftest import Federation
from tests.conftest import Clock

PROBLEM = "application/problem+json"
DROP = object()  # a field left out of a body


@dataclass(frozen=True)
class Ref:
    """An id known only once the federation exists: ``Ref("ana")``."""

    name: str


ANA, BO, HILLTOP = Ref("ana"), Ref("bo"), Ref("hilltop_member")
IDEMPOTENCY, IF_MATCH = "Idempotency-Key", "If-Match"
Expect = tuple[int, str]
INVALID: Expect = (422, "invalid_request")
AMOUNT: Expect = (422, "amount_out_of_range")
MALFORMED: Expect = (400, "malformed_body")
NO_ACCOUNT: Expect = (404, "account_not_found")
CONFLICT: Expect = (409, "idempotency_conflict")
STALE: Expect = (412, "version_mismatch")
UNAUTHENTICATED: Expect = (401, "unauthenticated")
LONG = "x" * 501
MISSING = 2**31 - 1


@dataclass(frozen=True)
class Raw:
    """A body sent as bytes, with the content type given (or none)."""

    content: bytes
    content_type: str | None = "application/json"


@dataclass(frozen=True)
class Spliced:
    """A JSON body with the text ``"MARK"`` replaced by raw JSON (what json.dumps would
    not write, such as an escaped lone surrogate)."""

    body: Any
    raw: bytes


@dataclass(frozen=True)
class Ugly:
    case: str
    method: str
    url: str  # may name ids as {ana}, {bo}, {pending}, …
    body: Any  # JSON (with Refs), a Raw or Spliced, or None for no body at all
    expect: Expect
    caller: str = "treasurer"
    headers: dict[str, str] = field(default_factory=dict)


def posting(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "source_account_id": ANA,
        "destination_account_id": BO,
        "amount": 100,
        "currency": "HRB",
    }
    fields.update(changes)
    return {name: value for name, value in fields.items() if value is not DROP}


def payment(*postings: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"postings": list(postings) or [posting()], **fields}


def account(**changes: Any) -> dict[str, Any]:
    fields = {"community": "riverbend", "currency": "HRB", "type": "member", "name": "dana"}
    fields.update(changes)
    return {name: value for name, value in fields.items() if value is not DROP}


def tx(case: str, expect: Expect, **posting_changes: Any) -> Ugly:
    """A payment from Ana to Bo with some fields of its posting changed."""
    return Ugly(case, "POST", "/v1/transactions", payment(posting(**posting_changes)), expect)


def txb(case: str, body: Any, expect: Expect, headers: dict[str, str] | None = None) -> Ugly:
    """A payment body of its own."""
    return Ugly(case, "POST", "/v1/transactions", body, expect, headers=headers or {})


def amount_text(case: str, literal: bytes, expect: Expect) -> Ugly:
    """An amount written into the JSON text as is (what json.dumps would not write)."""
    content = (
        b'{"postings": [{"source_account_id": 1, "destination_account_id": 2, "amount": '
        + literal
        + b', "currency": "HRB"}]}'
    )
    return txb(case, Raw(content), expect)


def acct(case: str, expect: Expect, caller: str = "treasurer", **changes: Any) -> Ugly:
    return Ugly(case, "POST", "/v1/accounts", account(**changes), expect, caller)


def get(case: str, url: str, expect: Expect, caller: str = "treasurer") -> Ugly:
    return Ugly(case, "GET", url, None, expect, caller)


def by(caller: str, case: str, method: str, url: str, body: Any, expect: Expect, **h: str) -> Ugly:
    return Ugly(case, method, url, body, expect, caller, dict(h))


def fed(case: str, method: str, url: str, body: Any, expect: Expect) -> Ugly:
    return Ugly(case, method, url, body, expect, "federation")


def currency(**changes: Any) -> dict[str, Any]:
    return {"code": "NEW", "kind": "unit", "scale": 2, "name": "N", "symbol": "n", **changes}


def rate(**changes: Any) -> dict[str, Any]:
    return {"currency": "LEAF", "rate": "1", "reason": "review", **changes}


def quote(**changes: Any) -> dict[str, Any]:
    return {"payer_account_id": ANA, "to_currency": "HHT", "source_amount": 100, **changes}


def convert(**changes: Any) -> dict[str, Any]:
    # A rate any rate in force beats: these requests are refused for something else.
    fields = {
        "payer_account_id": ANA,
        "payee_account_id": HILLTOP,
        "source_amount": 100,
        "expected_rate": "1/1000000",
    }
    fields.update(changes)
    return {name: value for name, value in fields.items() if value is not DROP}


NESTED = b'{"postings": [], "metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"


def cursor(text: str) -> str:
    """A cursor in the ledger's form (base64 of "<micros>:<id>"), for any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


HUGE_CURSOR = cursor(f"{10**23}:{10**23}")
HUGE_ID_CURSOR = cursor(f"0:{10**20}")
BEFORE_YEAR_1 = "0001-01-01T00:00:00%2B01:00"
AFTER_YEAR_9999 = "9999-12-31T23:59:59-01:00"
P = "/v1/transactions/{pending}"
FED = "federation"

# fmt: off
BODIES = [
    # -- not JSON, or not the JSON asked for -----------------------------------------------------
    txb("malformed JSON", Raw(b'{"postings": ['), MALFORMED),
    txb("not JSON at all", Raw(b"pay bo 100"), MALFORMED),
    txb("trailing garbage", Raw(b'{"postings": []} x'), MALFORMED),
    txb("invalid UTF-8", Raw(b'{"memo": "\xff\xfe"}'), MALFORMED),
    txb("nested 5,000 deep", Raw(NESTED), MALFORMED),
    txb("an empty body", Raw(b""), INVALID),
    txb("no body and no content type", None, INVALID),
    txb("JSON null", Raw(b"null"), INVALID),
    txb("a JSON array", [payment()], INVALID),
    txb("a JSON string", "pay bo", INVALID),
    txb("a JSON number", 100, INVALID),
    txb("an empty object", {}, INVALID),
    txb("JSON as text/plain", Raw(b'{"postings": []}', "text/plain"), INVALID),
    txb("a form", Raw(b"amount=100", "application/x-www-form-urlencoded"), INVALID),
    txb("no content type", Raw(b'{"postings": []}', None), INVALID),
    # -- amounts ---------------------------------------------------------------------------------
    tx("amount as a string", INVALID, amount="100"),
    tx("amount as a decimal string", INVALID, amount="1.00"),
    tx("amount 1.5", INVALID, amount=1.5),
    tx("amount 100.0", INVALID, amount=100.0),
    tx("amount 1e3", INVALID, amount=1e3),
    tx("amount true", INVALID, amount=True),
    tx("amount null", INVALID, amount=None),
    tx("amount missing", INVALID, amount=DROP),
    tx("amount an object", INVALID, amount={"value": 1}),
    tx("amount 0", AMOUNT, amount=0),
    tx("amount -1", AMOUNT, amount=-1),
    tx("amount -(2**63)", AMOUNT, amount=-(2**63)),
    tx("amount 2**53", AMOUNT, amount=2**53),
    tx("amount 2**63", AMOUNT, amount=2**63),
    tx("amount 2**64", AMOUNT, amount=2**64),
    tx("amount 10**30", AMOUNT, amount=10**30),
    tx("amount 2**53 - 1, more than Ana has", (409, "insufficient_funds"), amount=2**53 - 1),
    amount_text("amount 10**400", b"1" + b"0" * 400, AMOUNT),
    amount_text("amount -0", b"-0", AMOUNT),
    amount_text("amount 007", b"007", MALFORMED),
    amount_text("amount 0x10", b"0x10", MALFORMED),
    amount_text("amount 1E400", b"1E400", INVALID),
    amount_text("amount NaN", b"NaN", INVALID),
    amount_text("amount -Infinity", b"-Infinity", INVALID),
    # -- accounts and currencies named by the postings -------------------------------------------
    tx("source id as a string", INVALID, source_account_id="1"),
    tx("source id 0", INVALID, source_account_id=0),
    tx("source id -1", INVALID, source_account_id=-1),
    tx("source id 2**31", INVALID, source_account_id=2**31),
    tx("source id 2**63", INVALID, source_account_id=2**63),
    tx("source id 10**30", INVALID, source_account_id=10**30),
    tx("source id 1.0", INVALID, source_account_id=1.0),
    tx("source id null", INVALID, source_account_id=None),
    tx("source unknown", NO_ACCOUNT, source_account_id=MISSING),
    tx("destination unknown", NO_ACCOUNT, destination_account_id=MISSING),
    tx("source in another community", NO_ACCOUNT, source_account_id=HILLTOP),
    tx("source and destination the same", (422, "same_account"), destination_account_id=ANA),
    tx("currency lowercase", INVALID, currency="hrb"),
    tx("currency unknown", (404, "currency_not_found"), currency="XYZ"),
    tx("currency of other accounts", (422, "currency_mismatch"), currency="LEAF"),
    tx("currency as a number", INVALID, currency=1),
    tx("currency 33 characters", INVALID, currency="H" * 33),
    tx("an unknown posting field", INVALID, fee=1),
    # -- the rest of a transaction ---------------------------------------------------------------
    txb("no postings", {"postings": []}, (422, "postings_empty")),
    txb("129 postings", {"postings": [posting(amount=1)] * 129}, (422, "postings_too_many")),
    txb("postings an object", {"postings": posting()}, INVALID),
    txb("an unknown field", payment(amount=100), INVALID),
    txb("metadata a list", payment(metadata=[]), INVALID),
    txb("memo 501 characters", payment(memo=LONG), INVALID),
    txb("memo with NUL", payment(memo="care\u0000work"), INVALID),
    txb("memo a lone surrogate", Spliced(payment(memo="MARK"), b'"\\ud800"'), INVALID),
    txb("memo a number", payment(memo=5), INVALID),
    txb("metadata key with NUL", payment(metadata={"a\u0000": 1}), INVALID),
    txb("metadata value with NUL", payment(metadata={"note": ["\u0000"]}), INVALID),
    txb("metadata a lone surrogate", Spliced(payment(metadata={"k": ["MARK"]}), b'"\\udfff"'),
        INVALID),
    txb("metadata key a lone surrogate", Spliced(payment(metadata={"MARK": 1}), b'"\\udfff"'),
        INVALID),
    txb("an unknown field named by a lone surrogate", Spliced({**payment(), "MARK": 1},
        b'"\\ud800"'), INVALID),
    txb("category upper case", payment(category="Care"), INVALID),
    txb("category 101 characters", payment(category="c" * 101), INVALID),
    txb("external_ref 201 characters", payment(external_ref="r" * 201), INVALID),
    txb("effective_date month 13", payment(effective_date="2026-13-01"), INVALID),
    txb("effective_date 30 February", payment(effective_date="2026-02-30"), INVALID),
    txb("effective_date a number", payment(effective_date=20260101), INVALID),
    txb("effective_date an instant", payment(effective_date="2026-01-01T00:00:00Z"), INVALID),
    txb("pending as text", payment(pending="yes"), INVALID),
    txb("pending as 1", payment(pending=1), INVALID),
    txb("timeout without pending", payment(timeout_seconds=60), (422, "timeout_out_of_range")),
    txb("timeout 0", payment(pending=True, timeout_seconds=0), (422, "timeout_out_of_range")),
    txb("timeout 91 days", payment(pending=True, timeout_seconds=91 * 86400),
        (422, "timeout_out_of_range")),
    txb("timeout 2**63", payment(pending=True, timeout_seconds=2**63),
        (422, "timeout_out_of_range")),
    txb("timeout 1.5", payment(pending=True, timeout_seconds=1.5), INVALID),
    # -- client ids ------------------------------------------------------------------------------
    txb("client id reused with other content", payment(client_id="nov-1", memo="other"), CONFLICT),
    txb("client id reused by header", payment(memo="other"), CONFLICT, {IDEMPOTENCY: "nov-1"}),
    txb("client id and header disagree", payment(client_id="nov-2"), INVALID,
        {IDEMPOTENCY: "nov-3"}),
    txb("client id with a space", payment(client_id="nov 1"), INVALID),
    txb("client id empty", payment(client_id=""), INVALID),
    txb("client id 129 characters", payment(client_id="c" * 129), INVALID),
    txb("client id not ASCII", payment(client_id="növ-1"), INVALID),
    txb("client id a number", payment(client_id=1), INVALID),
    txb("Idempotency-Key 129 characters", payment(), INVALID, {IDEMPOTENCY: "k" * 129}),
    # -- accounts --------------------------------------------------------------------------------
    acct("name taken", (409, "account_name_taken"), name="ana"),
    acct("name empty", INVALID, name=""),
    acct("name 201 characters", INVALID, name="n" * 201),
    acct("name with NUL", INVALID, name="da\u0000na"),
    acct("name missing", INVALID, name=DROP),
    acct("type unknown", INVALID, type="wizard"),
    acct("another treasurer's community", (403, "forbidden"), community="hilltop"),
    acct("community unknown", (404, "community_not_found"), FED, community="nowhere"),
    acct("community with capitals", INVALID, community="Riverbend"),
    acct("currency unknown", (404, "currency_not_found"), currency="XYZ"),
    acct("min_balance as text", INVALID, min_balance="0"),
    acct("min_balance 1.5", INVALID, min_balance=1.5),
    acct("min_balance 2**63", (422, "limits_invalid"), min_balance=2**63),
    acct("max_balance below -(2**63)", (422, "limits_invalid"), max_balance=-(2**63) - 1),
    acct("max_balance negative", (422, "limits_invalid"), max_balance=-1),
    acct("floor above ceiling", (422, "limits_invalid"), min_balance=10, max_balance=5),
    acct("metadata a list", INVALID, metadata=[1]),
    acct("metadata with NUL", INVALID, metadata={"\u0000": "\u0000"}),
    acct("an unknown field", INVALID, balance=100),
    acct("client id reused with other content", CONFLICT, client_id="acct-1", name="other"),
    by("treasurer", "Idempotency-Key of 128 reused with other content", "POST", "/v1/accounts",
       account(name="erin"), CONFLICT, **{IDEMPOTENCY: "k" * 128}),
    # -- the directory and keys ------------------------------------------------------------------
    fed("slug with a space", "POST", "/v1/communities", {"slug": "new town", "name": "N"}, INVALID),
    fed("slug taken", "POST", "/v1/communities", {"slug": "hilltop", "name": "N"},
        (409, "community_exists")),
    fed("slug 64 characters", "POST", "/v1/communities", {"slug": "s" * 64, "name": "N"}, INVALID),
    fed("community name NUL", "POST", "/v1/communities", {"slug": "new", "name": "\u0000"},
        INVALID),
    fed("community client id reused", "POST", "/v1/communities",
        {"slug": "other", "name": "O", "client_id": "comm-1"}, CONFLICT),
    fed("scale 9", "POST", "/v1/currencies", currency(scale=9), (422, "scale_out_of_range")),
    fed("scale -1", "POST", "/v1/currencies", currency(scale=-1), (422, "scale_out_of_range")),
    fed("scale 2.0", "POST", "/v1/currencies", currency(scale=2.0), INVALID),
    fed("code taken", "POST", "/v1/currencies", currency(code="HRB"), (409, "currency_exists")),
    fed("issuer unknown", "POST", "/v1/currencies", currency(kind="hearts", issuer="nowhere"),
        (404, "community_not_found")),
    fed("kind unknown", "POST", "/v1/currencies", currency(kind="gold"), INVALID),
    fed("symbol with NUL", "POST", "/v1/currencies", currency(symbol="\u0000"), INVALID),
    fed("role unknown", "POST", "/v1/keys", {"role": "god", "label": "x"}, INVALID),
    fed("treasurer key without community", "POST", "/v1/keys",
        {"role": "treasurer", "label": "x"}, INVALID),
    fed("auditor key with a community", "POST", "/v1/keys",
        {"role": "auditor", "community": "hilltop", "label": "x"}, INVALID),
    fed("key for an unknown community", "POST", "/v1/keys",
        {"role": "viewer", "community": "nowhere", "label": "x"}, (404, "community_not_found")),
    fed("key label empty", "POST", "/v1/keys", {"role": "auditor", "label": ""}, INVALID),
    fed("key label with NUL", "POST", "/v1/keys", {"role": "auditor", "label": "\u0000"}, INVALID),
    fed("key client id reused", "POST", "/v1/keys",
        {"role": "auditor", "label": "y", "client_id": "key-1"}, CONFLICT),
    fed("revoke an unknown key", "DELETE", "/v1/keys/999999", None, (404, "key_not_found")),
    fed("revoke key id 0", "DELETE", "/v1/keys/0", None, INVALID),
]

BATCH = "/v1/transactions/batch"
BATCHES = [
    by("treasurer", "batch of 8,191", "POST", BATCH,
       {"transactions": [payment(posting(amount=1))] * 8191}, (422, "batch_too_large")),
    by("treasurer", "empty batch", "POST", BATCH, {"transactions": []}, INVALID),
    by("treasurer", "batch not a list", "POST", BATCH, {"transactions": payment()}, INVALID),
    by("treasurer", "batch atomic as text", "POST", BATCH,
       {"transactions": [payment()], "atomic": "true"}, INVALID),
    by("treasurer", "batch item with amount 2.5", "POST", BATCH,
       {"transactions": [payment(), payment(posting(amount=2.5))]}, INVALID),
    by("treasurer", "batch item with NUL", "POST", BATCH,
       {"transactions": [payment(), payment(memo="\u0000")]}, INVALID),
    by("treasurer", "batch with an unknown field", "POST", BATCH,
       {"transactions": [payment()], "all": True}, INVALID),
    by("treasurer", "batch with a client id of its own", "POST", BATCH,
       {"transactions": [payment()], "client_id": "b"}, INVALID),
]

# Atomic batches are refused item by item inside a 200: nothing of them is written.
ATOMIC_REFUSALS = [
    ("an overdraft", [payment(), payment(posting(amount=10**9))], "insufficient_funds"),
    ("another community's source",
     [payment(), payment(posting(source_account_id=HILLTOP, destination_account_id=Ref("frozen")))],
     "account_not_found"),
    ("a reused client id", [payment(), payment(client_id="nov-1", memo="other")],
     "idempotency_conflict"),
    ("a client id twice", [payment(client_id="twice"), payment(client_id="twice", memo="other")],
     "idempotency_conflict"),
    ("a frozen account", [payment(), payment(posting(destination_account_id=Ref("frozen")))],
     "account_frozen"),
]

QUERIES = [
    get("limit 0", "/v1/accounts?limit=0", INVALID),
    get("limit 1001", "/v1/accounts?limit=1001", INVALID),
    get("limit -1", "/v1/transactions?limit=-1", INVALID),
    get("limit text", "/v1/transactions?limit=ten", INVALID),
    get("limit 1.5", "/v1/accounts/{ana}/statement?limit=1.5", INVALID),
    get("limit 10**30", "/v1/events?limit=1" + "0" * 30, INVALID),
    get("limit empty", "/v1/accounts?limit=", INVALID),
    get("cursor not base64", "/v1/accounts?cursor=!!!", (422, "cursor_invalid")),
    get("cursor empty", "/v1/transactions?cursor=", (422, "cursor_invalid")),
    get("cursor of words", "/v1/transactions?cursor=aGVsbG8", (422, "cursor_invalid")),
    get("cursor of huge numbers, accounts", "/v1/accounts?cursor=" + HUGE_CURSOR,
          (422, "cursor_invalid")),
    get("cursor of huge numbers, transactions", "/v1/transactions?cursor=" + HUGE_CURSOR,
        (422, "cursor_invalid")),
    get("cursor of huge numbers, statement", "/v1/accounts/{ana}/statement?cursor=" + HUGE_CURSOR,
        (422, "cursor_invalid")),
    get("cursor of a huge id, transactions",
          "/v1/transactions?cursor=" + HUGE_ID_CURSOR, (422, "cursor_invalid")),
    get("cursor of a huge id, statement",
          "/v1/accounts/{ana}/statement?cursor=" + HUGE_ID_CURSOR, (422, "cursor_invalid")),
    get("a mistyped query parameter", "/v1/accounts/{ana}/statement?sinse=2026-01-01T00:00:00Z",
        INVALID),
    get("cursor 201 characters", "/v1/accounts?cursor=" + "A" * 201, INVALID),
    get("as_of not an instant", "/v1/accounts/{ana}/balance?as_of=yesterday", INVALID),
    get("as_of without offset", "/v1/accounts/{ana}/balance?as_of=2026-01-01T00:00:00", INVALID),
    get("as_of month 13", "/v1/accounts/{ana}/balance?as_of=2026-13-01T00:00:00Z", INVALID),
    get("as_of 30 February", "/v1/accounts/{ana}/balance?as_of=2026-02-30T00:00:00Z", INVALID),
    get("as_of hour 25", "/v1/accounts/{ana}/balance?as_of=2026-01-01T25:00:00Z", INVALID),
    get("as_of offset 24:00", "/v1/accounts/{ana}/balance?as_of=2026-01-01T00:00:00%2B24:00",
        INVALID),
    get("as_of before year 1 in UTC", "/v1/accounts/{ana}/balance?as_of=" + BEFORE_YEAR_1, INVALID),
    get("as_of after 9999 in UTC", "/v1/accounts/{ana}/balance?as_of=" + AFTER_YEAR_9999, INVALID),
    get("as_of a unix time", "/v1/accounts/{ana}/balance?as_of=1767225600", INVALID),
    get("since after 9999 in UTC", "/v1/transactions?since=" + AFTER_YEAR_9999, INVALID),
    get("until before year 1", "/v1/accounts/{ana}/statement?until=" + BEFORE_YEAR_1, INVALID),
    get("valuation at year 0", "/v1/valuations/HRB?at=0000-01-01T00:00:00Z", INVALID),
    get("protocol at before year 1", "/v1/protocols/HRB/HHT?at=" + BEFORE_YEAR_1, INVALID),
    get("status filter unknown", "/v1/transactions?status=lost", INVALID),
    get("type filter unknown", "/v1/accounts?type=wizard", INVALID),
    get("account filter 0", "/v1/transactions?account_id=0", INVALID),
    get("account filter 2**63", "/v1/transactions?account_id=9223372036854775808", INVALID),
    get("account filter of another community", "/v1/transactions?account_id={hilltop_member}",
        NO_ACCOUNT),
    get("community filter unknown", "/v1/accounts?community=nowhere",
        (404, "community_not_found"), "auditor"),
    get("currency filter unknown", "/v1/accounts?currency=XYZ", (404, "currency_not_found"),
        "auditor"),
    get("community filter 65 characters", "/v1/accounts?community=" + "c" * 65, INVALID),
    get("events after text", "/v1/events?after=start", INVALID),
    get("events after -1", "/v1/events?after=-1", INVALID),
    get("events after 19 digits", "/v1/events?after=9999999999999999999", INVALID),
    get("events wait 31", "/v1/events?wait=31", INVALID),
    get("events wait -1", "/v1/events?wait=-1", INVALID),
    # -- ids in paths ----------------------------------------------------------------------------
    get("account id text", "/v1/accounts/ana", INVALID),
    get("account id 0", "/v1/accounts/0", INVALID),
    get("account id -1", "/v1/accounts/-1", INVALID),
    get("account id 1.5", "/v1/accounts/1.5", INVALID),
    get("account id 2**31", "/v1/accounts/2147483648", INVALID),
    get("account id 10**30", "/v1/accounts/1" + "0" * 30, INVALID),
    get("account id unknown", f"/v1/accounts/{MISSING}", NO_ACCOUNT),
    get("account of another community", "/v1/accounts/{hilltop_member}", NO_ACCOUNT),
    get("transaction id 2**63 - 1", "/v1/transactions/9223372036854775807",
        (404, "transaction_not_found")),
    get("transaction id 2**63", "/v1/transactions/9223372036854775808", INVALID),
    get("transaction id text", "/v1/transactions/first", INVALID),
    get("community 65 characters", "/v1/communities/" + "c" * 65, INVALID),
    get("community unknown", "/v1/communities/nowhere", (404, "community_not_found")),
    get("currency unknown", "/v1/currencies/XYZ", (404, "currency_not_found")),
    get("currency of emoji", "/v1/currencies/%F0%9F%92%A9", (404, "currency_not_found")),
    get("currency with NUL", "/v1/currencies/HRB%00", INVALID),
    get("community with NUL", "/v1/communities/riverbend%00", INVALID),
    get("valuation with NUL", "/v1/valuations/%00", INVALID),
    get("protocol with NUL", "/v1/protocols/HRB/HHT%00/versions", INVALID),
    get("community filter with NUL", "/v1/accounts?community=%00", INVALID),
    get("category filter with NUL", "/v1/transactions?category=care%00", INVALID),
    get("an unknown parameter with NUL", "/v1/accounts?x%00=%00", INVALID),
    get("valuation of an unknown currency", "/v1/valuations/XYZ", (404, "currency_not_found")),
    get("protocol of unknown currencies", "/v1/protocols/XYZ/HRB", (404, "currency_not_found")),
    get("no such address", "/v1/nowhere", (404, "not_found")),
    get("no such address outside /v1", "/favicon.ico", (404, "not_found")),
    by("treasurer", "a method the address does not take", "DELETE", "/v1/accounts", None,
       (405, "method_not_allowed")),
    by("treasurer", "PUT on an account", "PUT", "/v1/accounts/{ana}", account(),
       (405, "method_not_allowed")),
]

KEYS = [
    get("no Authorization", "/v1/accounts", UNAUTHENTICATED, "no key"),
    get("Basic instead of Bearer", "/v1/accounts", UNAUTHENTICATED, "basic"),
    get("Bearer and nothing", "/v1/accounts", UNAUTHENTICATED, "bearer nothing"),
    get("a key of words", "/v1/accounts", UNAUTHENTICATED, "words"),
    get("a known prefix, a wrong secret", "/v1/accounts", UNAUTHENTICATED, "wrong secret"),
    get("a key of 10,000 characters", "/v1/accounts", UNAUTHENTICATED, "long key"),
    get("a key of Latin-1 junk", "/v1/accounts", UNAUTHENTICATED, "latin-1 key"),
    by("no key", "a write with no key", "POST", "/v1/transactions", payment(), UNAUTHENTICATED),
]


def freeze(case: str, expect: Expect, **headers: str) -> Ugly:
    return by("treasurer", case, "PATCH", "/v1/accounts/{bo}", {"status": "frozen"}, expect,
              **headers)


def change(case: str, url: str, body: Any, expect: Expect) -> Ugly:
    return by("treasurer", case, "PATCH", url, body, expect)


CHANGES = [
    freeze("If-Match of words", STALE, **{IF_MATCH: "fresh"}),
    freeze("If-Match stale", STALE, **{IF_MATCH: '"999"'}),
    freeze("If-Match of 40 digits", STALE, **{IF_MATCH: '"' + "9" * 40 + '"'}),
    freeze("If-Match negative", STALE, **{IF_MATCH: '"-1"'}),
    freeze("If-Match empty", STALE, **{IF_MATCH: ""}),
    freeze("If-Match a list", STALE, **{IF_MATCH: '"1", "2"'}),
    freeze("If-Match of superscript digits", STALE, **{IF_MATCH: '"\u00b2\u00b3"'}),
    freeze("If-Match 65 characters", INVALID, **{IF_MATCH: "9" * 65}),
    change("status unknown", "/v1/accounts/{bo}", {"status": "deleted"}, INVALID),
    change("close an account with money", "/v1/accounts/{ana}", {"status": "closed"},
           (409, "account_not_empty")),
    change("floor above the balance", "/v1/accounts/{ana}", {"min_balance": 10**6},
           (409, "limit_below_balance")),
    change("ceiling as text", "/v1/accounts/{ana}", {"max_balance": "100"}, INVALID),
    change("metadata with NUL", "/v1/accounts/{ana}", {"metadata": {"k": "\u0000"}}, INVALID),
    change("no body", "/v1/accounts/{ana}", None, INVALID),
    change("an unknown field", "/v1/accounts/{ana}", {"name": "anna"}, INVALID),
    change("another community's account", "/v1/accounts/{hilltop_member}", {"status": "frozen"},
           NO_ACCOUNT),
    by(FED, "protocol If-Match of words", "POST", "/v1/protocols/LEAF/HHT", {"reason": "r"},
       STALE, **{IF_MATCH: "zero"}),
    by(FED, "protocol If-Match stale", "POST", "/v1/protocols/HRB/HHT", {"reason": "r"}, STALE,
       **{IF_MATCH: '"0"'}),
]


def resolve(case: str, url: str, body: Any, expect: Expect, **headers: str) -> Ugly:
    return by("treasurer", case, "POST", url, body, expect, **headers)


HOLDS = [
    resolve("post more than held", P + "/post", {"amounts": [1001]},
            (422, "post_amount_exceeds_pending")),
    resolve("post a negative amount", P + "/post", {"amounts": [-1]}, AMOUNT),
    resolve("post an amount as text", P + "/post", {"amounts": ["1"]}, INVALID),
    resolve("post amounts not a list", P + "/post", {"amounts": 5}, INVALID),
    resolve("post two amounts for one posting", P + "/post", {"amounts": [1, 1]}, INVALID),
    resolve("post 2**63", P + "/post", {"amounts": [2**63]}, AMOUNT),
    resolve("post with an unknown field", P + "/post", {"amount": 5}, INVALID),
    resolve("post what is not pending", "/v1/transactions/{transaction}/post", None,
            (409, "not_pending")),
    resolve("void what is not pending", "/v1/transactions/{transaction}/void", None,
            (409, "not_pending")),
    resolve("void an unknown transaction", "/v1/transactions/9223372036854775807/void", None,
            (404, "transaction_not_found")),
    resolve("reverse a hold", P + "/reverse", None, (409, "not_reversible")),
    resolve("reverse with a memo too long", "/v1/transactions/{transaction}/reverse",
            {"memo": LONG}, INVALID),
    resolve("reverse with a memo with NUL", "/v1/transactions/{transaction}/reverse",
            {"memo": "\u0000"}, INVALID),
    resolve("post, Idempotency-Key of 128", P + "/post", {"amounts": [2000]},
            (422, "post_amount_exceeds_pending"), **{IDEMPOTENCY: "p" * 128}),
]

EXCHANGE = [
    fed("rate of words", "POST", "/v1/valuations", rate(rate="cheap"), INVALID),
    fed("rate 0", "POST", "/v1/valuations", rate(rate="0"), (422, "rate_invalid")),
    fed("rate 1/0", "POST", "/v1/valuations", rate(rate="1/0"), (422, "rate_invalid")),
    fed("rate as a float", "POST", "/v1/valuations", rate(rate=0.8), INVALID),
    fed("rate 10**40", "POST", "/v1/valuations", rate(rate="1" + "0" * 40), (422, "rate_invalid")),
    fed("valuation of an unknown currency", "POST", "/v1/valuations", rate(currency="XYZ"),
        (404, "currency_not_found")),
    fed("valuation from an instant without offset", "POST", "/v1/valuations",
          rate(effective_from="2030-01-01T00:00:00"), INVALID),
    fed("valuation from a unix time", "POST", "/v1/valuations",
          rate(effective_from=1893456000), INVALID),
    fed("valuation reason with NUL", "POST", "/v1/valuations", rate(reason="\u0000"), INVALID),
    fed("approvals 11", "PUT", "/v1/exchange/settings",
        {"reference_unit": "FRU", "federation_community": "commons", "approvals_required": 11},
        INVALID),
    fed("reference unit not a unit", "PUT", "/v1/exchange/settings",
        {"reference_unit": "HRB", "federation_community": "commons"}, INVALID),
    fed("protocol from a currency to itself", "POST", "/v1/protocols/HRB/HRB", {"reason": "r"},
        INVALID),
    fed("protocol fee 10,000", "POST", "/v1/protocols/LEAF/HHT", {"reason": "r", "fee_bps": 10000},
        INVALID),
    fed("protocol until before from", "POST", "/v1/protocols/LEAF/HHT",
        {"reason": "r", "effective_from": "2030-01-01T00:00:00Z",
         "effective_until": "2029-01-01T00:00:00Z"}, INVALID),
    fed("protocol from an instant without offset", "POST",
          "/v1/protocols/LEAF/HHT", {"reason": "r", "effective_from": "2030-01-01T00:00:00"},
          INVALID),
    fed("protocol fee account unknown", "POST", "/v1/protocols/LEAF/HHT",
        {"reason": "r", "fee_account_id": MISSING}, NO_ACCOUNT),
    fed("protocol window month 13", "POST", "/v1/protocols/LEAF/HHT",
        {"reason": "r", "windows": [{"months": [13]}]}, INVALID),
    fed("protocol limit 0", "POST", "/v1/protocols/LEAF/HHT",
        {"reason": "r", "limits": {"account_daily": 0}}, INVALID),
    fed("protocol reason with NUL", "POST", "/v1/protocols/LEAF/HHT", {"reason": "\u0000"},
        INVALID),
    fed("suspend a pair without protocol", "POST", "/v1/protocols/HHT/LEAF/suspend",
        {"reason": "r"}, (404, "protocol_not_found")),
    fed("approve an unknown version", "POST", f"/v1/protocol-versions/{MISSING}/approve", None,
        (404, "proposal_not_found")),
    fed("approve version 2**31", "POST", "/v1/protocol-versions/2147483648/approve", None,
        INVALID),
    resolve("quote with both amounts", "/v1/quotes", quote(target_amount=1), INVALID),
    resolve("quote with no amount", "/v1/quotes", quote(source_amount=None), INVALID),
    resolve("quote 2**53", "/v1/quotes", quote(source_amount=2**53), AMOUNT),
    resolve("quote from another community", "/v1/quotes",
            quote(payer_account_id=HILLTOP, to_currency="HRB"), NO_ACCOUNT),
    resolve("quote into an unknown currency", "/v1/quotes", quote(to_currency="XYZ"),
            (404, "currency_not_found")),
    resolve("quote without protocol", "/v1/quotes", quote(to_currency="LEAF"),
            (409, "conversion_not_allowed")),
    resolve("convert with an unknown quote", "/v1/conversions",
            convert(source_amount=DROP, expected_rate=DROP, quote_id="q_nope"),
            (404, "quote_not_found")),
    resolve("convert with a quote id of 41", "/v1/conversions",
            convert(source_amount=DROP, expected_rate=DROP, quote_id="q" * 41), INVALID),
    resolve("convert to an unknown payee", "/v1/conversions", convert(payee_account_id=MISSING),
            NO_ACCOUNT),
    resolve("convert from another community", "/v1/conversions",
            convert(payer_account_id=HILLTOP, payee_account_id=ANA), NO_ACCOUNT),
    resolve("convert with slippage 10,001", "/v1/conversions", convert(max_slippage_bps=10001),
            INVALID),
    resolve("convert more than Ana has", "/v1/conversions",
          convert(source_amount=10**9), (409, "insufficient_funds")),
    resolve("convert with a memo with NUL", "/v1/conversions", convert(memo="\u0000"), INVALID),
]
RECIPROCITY = [
    get("window with from only", "/v1/reciprocity/communities/riverbend?from=2026-11-01", INVALID),
    get("window of 30 February", "/v1/reciprocity/matrix?from=2026-02-30&to=2026-03-02", INVALID,
        FED),
    get("window ending before it starts",
        "/v1/reciprocity/matrix?from=2026-12-01&to=2026-11-01", INVALID, FED),
    get("window of 10,000 years", "/v1/reciprocity/matrix?from=0001-01-01&to=9999-12-31",
        INVALID, FED),
    get("window day as an instant",
        "/v1/reciprocity/free-riders?from=2026-11-01T00:00:00Z&to=2026-12-01", INVALID, FED),
    get("another community's reciprocity", "/v1/reciprocity/communities/hilltop",
        (404, "community_not_found")),
    get("reciprocity of NUL", "/v1/reciprocity/communities/%00", INVALID),
    fed("thresholds relative 2", "PUT", "/v1/reciprocity/thresholds",
        {"absolute": None, "relative": "2"}, INVALID),
    fed("thresholds relative of words", "PUT", "/v1/reciprocity/thresholds",
        {"absolute": None, "relative": "a lot"}, INVALID),
    fed("thresholds absolute 0", "PUT", "/v1/reciprocity/thresholds",
        {"absolute": 0, "relative": None}, INVALID),
    fed("thresholds absolute 1.5", "PUT", "/v1/reciprocity/thresholds",
        {"absolute": 1.5, "relative": None}, INVALID),
    fed("thresholds missing", "PUT", "/v1/reciprocity/thresholds", {}, INVALID),
    fed("credit line -1", "PUT", "/v1/reciprocity/credit-lines/riverbend", {"credit_limit": -1},
        INVALID),
    fed("credit line 2**63", "PUT", "/v1/reciprocity/credit-lines/riverbend",
        {"credit_limit": 2**63}, INVALID),
    fed("credit line for nowhere", "PUT", "/v1/reciprocity/credit-lines/nowhere",
        {"credit_limit": 5}, (404, "community_not_found")),
    fed("clearing proposal unknown", "GET", "/v1/clearing/proposals/clr_nope", None,
        (404, "not_found")),
    fed("clearing proposal id 41", "GET", "/v1/clearing/proposals/" + "c" * 41, None, INVALID),
    fed("execute an unknown proposal", "POST", "/v1/clearing/proposals/clr_nope/execute", None,
        (404, "not_found")),
]
# fmt: on


@dataclass(frozen=True)
class Scene:
    client: TestClient
    engine: Engine
    ids: dict[str, int]
    headers: dict[str, dict[str, str]]


@pytest.fixture
def scene(client: TestClient, engine: Engine, clock: Clock, federation: Federation) -> Scene:
    """The federation with an exchange (Riverbend Hearts convert to Hilltop's), and the
    first uses of the client ids the rows reuse with other content."""
    ledger = Ledger(engine, clock=clock)
    ledger.create_community("commons", "The federation's own accounts")
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Reference", symbol="¤")
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="commons")
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("HHT", "1"), ("LEAF", "4/5")):
        exchange.set_valuation(code, Fraction(rate), by="key:setup", reason="founding")
    exchange.propose(ProtocolSpec("HRB", "HHT"), by="key:setup", reason="Hearts at valuation")
    admin, treasurer = federation.keys["federation"], federation.keys["treasurer"]
    prefix = treasurer["Authorization"].split("_")[1]
    headers = {
        **federation.keys,
        "no key": {},
        "basic": {"Authorization": "Basic YW5hOnNlY3JldA=="},
        "bearer nothing": {"Authorization": "Bearer "},
        "words": {"Authorization": "Bearer let-me-in"},
        "wrong secret": {"Authorization": f"Bearer hl_{prefix}_{'x' * 43}"},
        "long key": {"Authorization": "Bearer hl_" + "k" * 10_000},
        "latin-1 key": {"Authorization": "Bearer hl_\u00e9\u00ff_\u00e0"},
    }
    firsts = [
        ("/v1/transactions", payment(client_id="nov-1"), treasurer),
        ("/v1/accounts", account(name="first", client_id="acct-1"), treasurer),
        ("/v1/accounts", account(name="erin-first"), {**treasurer, IDEMPOTENCY: "k" * 128}),
        ("/v1/communities", {"slug": "first", "name": "F", "client_id": "comm-1"}, admin),
        ("/v1/keys", {"role": "auditor", "label": "x", "client_id": "key-1"}, admin),
    ]
    ids = {
        "ana": federation.ana,
        "bo": federation.bo,
        "frozen": federation.frozen,
        "hilltop_member": federation.hilltop_member,
        "hilltop_leaves": federation.hilltop_leaves,
        "pending": federation.pending,
        "transaction": federation.transaction,
    }
    for url, body, headers_ in firsts:
        first = client.post(url, json=_resolve(body, ids), headers=headers_)
        assert first.status_code == 201, first.text
    return Scene(client, engine, ids, headers)


def _resolve(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, Ref):
        return ids[value.name]
    if isinstance(value, dict):
        return {name: _resolve(item, ids) for name, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, ids) for item in value]
    return value


def send(scene: Scene, row: Ugly) -> Response:
    # Header values beyond ASCII go out as Latin-1 bytes, as HTTP/1.1 carries them.
    headers: dict[str, str | bytes] = {
        name: value if value.isascii() else value.encode("latin-1")
        for name, value in {**scene.headers[row.caller], **row.headers}.items()
    }
    url = row.url.format(**scene.ids)
    body = row.body
    if isinstance(body, Spliced):
        text = json.dumps(_resolve(body.body, scene.ids)).encode()
        body = Raw(text.replace(b'"MARK"', body.raw))
    if isinstance(body, Raw):
        if body.content_type is not None:
            headers["Content-Type"] = body.content_type
        return scene.client.request(row.method, url, content=body.content, headers=headers)
    if body is None:
        return scene.client.request(row.method, url, headers=headers)
    return scene.client.request(row.method, url, json=_resolve(body, scene.ids), headers=headers)


def everything(scene: Scene) -> dict[str, list[str]]:
    """Every row of every table (the tables of layers added later too), but the minute a
    key was last used: whatever a request writes, and wherever, shows here."""
    with scene.engine.connect() as connection:
        tables = inspect(connection).get_table_names()
        dump = {}
        for table in tables:
            result = connection.execute(text(f'SELECT * FROM "{table}"'))
            names = list(result.keys())
            rows = [
                repr({n: v for n, v in zip(names, row, strict=True) if n != "last_used_at"})
                for row in result
            ]
            dump[table] = sorted(rows)
    return dump


def _refusal_problem(response: Response, row: Ugly) -> str | None:
    got = f"{response.status_code} {response.text[:240]}"
    if response.status_code >= 500:
        return f"a server error: {got}"
    status, code = row.expect
    content_type = response.headers.get("content-type")
    if (response.status_code, content_type) != (status, PROBLEM):
        return f"expected a {status} problem, got {got} ({content_type})"
    body = response.json()
    missing = [name for name in ("type", "title", "status", "detail", "code") if name not in body]
    if missing:
        return f"a problem without {missing}: {got}"
    if (body["code"], body["status"]) != (code, status):
        return f"expected {code}, got {got}"
    if not body["type"].endswith("/" + body["code"]) or not body["detail"]:
        return f"type, code and detail disagree: {got}"
    return None


def walk(scene: Scene, rows: list[Ugly]) -> list[str]:
    """The rows not refused cleanly (or that changed something)."""
    failures: list[str] = []
    before = everything(scene)
    for row in rows:
        response = send(scene, row)
        wrong = [problem] if (problem := _refusal_problem(response, row)) is not None else []
        after = everything(scene)
        if after != before:
            changed = sorted(name for name in after if after[name] != before[name])
            wrong.append(f"the refused request changed {changed}")
        before = after
        failures.extend(f"{row.case}: {what}" for what in wrong)
    return failures


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(BODIES, id="bodies"),
        pytest.param(BATCHES, id="batches"),
        pytest.param(QUERIES, id="queries and paths"),
        pytest.param(KEYS, id="keys"),
        pytest.param(CHANGES, id="changes"),
        pytest.param(HOLDS, id="holds"),
        pytest.param(EXCHANGE, id="exchange"),
        pytest.param(RECIPROCITY, id="reciprocity"),
    ],
)
def test_every_ugly_request_is_refused_cleanly(scene: Scene, rows: list[Ugly]) -> None:
    failures = walk(scene, rows)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("case", "items", "code"), ATOMIC_REFUSALS, ids=[case for case, _, _ in ATOMIC_REFUSALS]
)
def test_an_atomic_batch_with_one_refusal_writes_nothing(
    scene: Scene, case: str, items: list[dict[str, Any]], code: str
) -> None:
    before = everything(scene)
    response = scene.client.post(
        "/v1/transactions/batch",
        json={"transactions": _resolve(items, scene.ids), "atomic": True},
        headers=scene.headers["treasurer"],
    )
    assert response.status_code == 200, response.text
    result = response.json()
    codes = [item["problem"]["code"] for item in result["results"]]
    assert codes == ["batch_item_failed"] * (len(items) - 1) + [code]
    assert (result["created"], result["rejected"]) == (0, len(items))
    assert everything(scene) == before


def test_unicode_that_is_text_round_trips(scene: Scene) -> None:
    """Emoji, combining marks, right-to-left overrides and zero-width joiners are text."""
    junk = "🍃♡ e\u0301 \u202eevil\u202c \u200d\ufeff 𝕳 \U0010fffd"
    created = scene.client.post(
        "/v1/transactions",
        json=payment(
            posting(source_account_id=scene.ids["ana"], destination_account_id=scene.ids["bo"]),
            memo=junk,
            metadata={junk: [junk]},
        ),
        headers=scene.headers["treasurer"],
    )
    assert created.status_code == 201, created.text
    read = scene.client.get(
        f"/v1/transactions/{created.json()['id']}", headers=scene.headers["viewer"]
    )
    assert (read.json()["memo"], read.json()["metadata"]) == (junk, {junk: [junk]})


EXTREMES = [
    "/v1/accounts/{ana}/balance?as_of=0001-01-01T00:00:00Z",
    "/v1/accounts/{ana}/balance?as_of=9999-12-31T23:59:59.999999Z",
    "/v1/accounts/{ana}/statement?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59.999999Z",
    "/v1/accounts/{ana}/statement?since=9999-12-31T23:59:59.999999Z",
    "/v1/transactions?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59.999999Z",
    "/v1/transactions?since=9999-12-31T23:59:59.999999%2B00:00",
    "/v1/valuations/HRB?at=9999-12-31T23:59:59.999999Z",
    "/v1/protocols/HRB/HHT?at=9999-12-31T23:59:59.999999Z",
    "/v1/reciprocity/communities/riverbend?from=0001-01-01&to=0001-01-02",
    "/v1/reciprocity/free-riders?from=0001-01-01&to=0001-01-31",
    "/v1/reciprocity/matrix?from=9999-12-01&to=9999-12-31",
    "/v1/events?after=999999999999999999&limit=1000",
    "/v1/accounts?limit=1000",
]


@pytest.mark.parametrize("url", EXTREMES)
def test_extreme_but_valid_instants_are_answered(scene: Scene, url: str) -> None:
    """The first and last instants RFC 3339 can write are questions like any other."""
    response = scene.client.get(url.format(**scene.ids), headers=scene.headers["federation"])
    assert response.status_code in (200, 404), response.text


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/v1/transactions", payment(memo="a\u0000"), "memo"),
        ("/v1/transactions", payment(metadata={"shift": ["ok", "\u0000"]}), "metadata.shift[1]"),
        ("/v1/transactions", payment(metadata={"\u0000": 1}), "metadata"),
        (
            "/v1/transactions/batch",
            {"transactions": [payment(), payment(memo="\u0000")]},
            "transactions[1].memo",
        ),
        ("/v1/accounts", account(name="\u0000"), "name"),
    ],
)
def test_unstorable_text_is_refused_where_it_is(
    scene: Scene, url: str, body: dict[str, Any], field: str
) -> None:
    """A NUL (which PostgreSQL refuses) is named by its place, never echoed."""
    response = scene.client.post(
        url, json=_resolve(body, scene.ids), headers=scene.headers["treasurer"]
    )
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert response.json()["field"] == field
    assert "\\u0000" not in response.text  # JSON would write a NUL so


def test_the_longest_idempotency_key_replays(scene: Scene) -> None:
    """128 characters fit the header; the stored record keys it by digest, and a replay
    still finds the first answer."""
    headers = {**scene.headers["treasurer"], IDEMPOTENCY: "z" * 128}
    body = _resolve(account(name="fern"), scene.ids)
    first = scene.client.post("/v1/accounts", json=body, headers=headers)
    again = scene.client.post("/v1/accounts", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
