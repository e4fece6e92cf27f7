"""Request and response bodies, in families (``AccountCreate``, ``AccountPublic``,
``AccountPage``). Amounts are JSON integers of minor units with the currency code beside
them; instants are RFC 3339 in UTC. Request models forbid unknown fields and coerce
nothing: ``"12"`` is not an amount, ``12.0`` is not an amount."""

from __future__ import annotations

import datetime as dt
import json
import re
from contextvars import ContextVar
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ledger.authority import HeldIn
from ledger.model import (
    AccountStatus,
    AccountType,
    CommunityStatus,
    CurrencyKind,
    EntryKind,
    EventKind,
    TransactionStatus,
)
from ledger.money import AMOUNT_MAX, AMOUNT_MIN, BALANCE_MAX, BALANCE_MIN, SCALE_MAX

T = TypeVar("T")

Slug = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Lowercase letters, digits and hyphens.",
        examples=["riverbend"],
    ),
]
CurrencyCode = Annotated[
    str,
    Field(
        pattern=r"^[A-Z][A-Z0-9]{1,31}$",
        description="Uppercase letters and digits.",
        examples=["HRB"],
    ),
]
ClientId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]


def client_id_field() -> Any:
    return Field(
        None,
        description="Your own id for this request. Retrying with the same id and the same content "
        "returns the original result; the same id with different content is refused "
        "(idempotency_conflict). Printable ASCII without spaces.",
        examples=["2026-11-import-0001"],
    )


Amount = Annotated[
    StrictInt,
    Field(
        ge=AMOUNT_MIN,
        le=AMOUNT_MAX,
        description="Whole minor units, 1 to 2^53 - 1.",
        examples=[1250],
    ),
]
Limit = Annotated[
    StrictInt,
    Field(ge=BALANCE_MIN, le=BALANCE_MAX, description="Minor units (signed 64-bit).", examples=[0]),
]
METADATA_MAX_BYTES = 16_384  # a metadata object's size as compact JSON


def _finite_and_small(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is stored as JSON: no NaN or Infinity (which JSON has no words for, and
    which PostgreSQL refuses), and at most ``METADATA_MAX_BYTES`` of it."""
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        raise ValueError(
            "metadata holds NaN or Infinity, which JSON does not allow; send a finite number "
            'or the text "NaN"'
        ) from None
    size = len(encoded.encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(
            f"metadata is {size:,} bytes as JSON; at most {METADATA_MAX_BYTES:,} are kept "
            "with a record: keep large documents elsewhere and store their address"
        )
    return value


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_finite_and_small),
    Field(
        description="Free-form JSON object kept with the record: finite numbers only, at most "
        f"{METADATA_MAX_BYTES:,} bytes as compact JSON.",
        examples=[{"shift": "morning"}],
    ),
]
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _iso_date(value: object) -> dt.date:
    if not isinstance(value, str) or not ISO_DATE.match(value):
        raise ValueError("a date is text of the form YYYY-MM-DD")
    return dt.date.fromisoformat(value)


# Dates travel as "YYYY-MM-DD" text only (pydantic alone would also take a number of days).
IsoDate = Annotated[
    dt.date,
    BeforeValidator(_iso_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": ISO_DATE.pattern}),
]
RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


INSTANT_FORMS = (
    "an RFC 3339 instant with its offset (2026-12-01T09:30:00Z or 2026-12-01T10:30:00+01:00), "
    "or a date (2026-12-01), meaning its start, 00:00 UTC"
)


def parse_instant(value: object) -> dt.datetime:
    """The one reading of an instant the API is given, in a body or a query: RFC 3339 with
    its offset, in UTC, or a plain date meaning its start (00:00 UTC). Without an offset an
    instant means different moments in different places, so it is refused, not guessed.

    Refusals are ``ValueError``s (``PydanticCustomError``) naming the forms accepted."""
    if isinstance(value, str) and ISO_DATE.match(value):
        try:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        except ValueError:
            raise _not_an_instant(value, "there is no such day") from None
    if not isinstance(value, str):
        raise _not_an_instant(value, "instants are text")
    if not RFC3339.match(value):
        offset = RFC3339.match(value + "Z") is not None
        raise _not_an_instant(value, "it has no offset" if offset else "it is neither form")
    text = value.upper().replace("Z", "+00:00")
    whole, dot, rest = text.partition(".")
    if dot:  # Python reads at most six decimals of a second; RFC 3339 allows more
        digits = rest[: len(rest) - 6]
        text = f"{whole}.{digits[:6].ljust(6, '0')}{rest[-6:]}"
    try:
        return dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    except OverflowError:
        raise _not_an_instant(value, "it is outside the years 1 to 9999 in UTC") from None
    except ValueError:
        raise _not_an_instant(value, "there is no such day, time or offset") from None


def _not_an_instant(value: object, why: str) -> PydanticCustomError:
    shown = json.dumps(value, ensure_ascii=False)[:60] if isinstance(value, str) else "The value"
    return PydanticCustomError(
        "instant_invalid",
        "{shown} is not an instant ({why}); send {forms}",
        {"shown": shown, "why": why, "forms": INSTANT_FORMS},
    )


# Instants in bodies travel as text only (pydantic alone would take a Unix time or a naive
# datetime), read by parse_instant.
InstantText = Annotated[
    dt.datetime,
    BeforeValidator(parse_instant),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}
    ),
]
AccountId = Annotated[StrictInt, Field(ge=1, le=2**31 - 1, description="Account id.", examples=[2])]


def storable(text: str) -> bool:
    """Whether every database can keep the text: PostgreSQL refuses NUL characters, and
    an unpaired surrogate (JSON allows ``"\\ud800"``) has no UTF-8 form."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def unstorable_at(value: object) -> str | None:
    """Where in a JSON value there is text no database can keep (a key or a string).

    Iterative, so that a body nested as deep as the JSON parser allows cannot exhaust the
    stack; a path is spelled out only for the text it finds."""
    if _all_storable(value):  # the usual answer, found without tracking where
        return None
    # Each item carries a link (its parent's link, its key or index) instead of a path.
    stack: list[tuple[object, tuple[Any, str | int] | None]] = [(value, None)]
    while stack:
        item, link = stack.pop()
        if isinstance(item, str):
            if not storable(item):
                return _path(link)
        elif isinstance(item, dict):
            if not all(storable(key) for key in item if isinstance(key, str)):
                return f"a key of {_path(link)}"  # never echo the key itself
            stack.extend((child, (link, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (link, index)) for index, child in enumerate(item))
    return None


def _all_storable(value: object) -> bool:
    """Whether all text in a JSON value is storable, checked as one string (Python's UTF-8
    encoder refuses every surrogate, paired or not, so joining changes no answer)."""
    texts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            stack.extend(item)  # the keys
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return storable("".join(texts))


def _path(link: tuple[Any, str | int] | None) -> str:
    parts: list[str | int] = []
    while link is not None:
        link, part = link
        parts.append(part)
    path = ""
    for part in reversed(parts):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "the body"


# Set while a body's text is being validated: the body checked all of it, so the models
# nested in it need not walk their part again (a batch of 8,190 walked its text three
# times, 11% of the request).
_text_checked: ContextVar[bool] = ContextVar("text_checked", default=False)


class Strict(BaseModel):
    """A request body: unknown fields are refused, and so is text no database can keep,
    anywhere in the body (metadata included) and before any field is looked at.

    The outermost ``Strict`` model checks the text of all the models nested in it, which
    then skip the walk: a validator that built a nested ``Strict`` model from text it
    derived, rather than from the body's, would have to check that text itself."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _text_is_storable(cls, data: object, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if _text_checked.get():  # nested in a body that checked it all
            return handler(data)
        where = unstorable_at(data)
        if where is not None:
            raise PydanticCustomError(
                "unstorable_text",
                "{where} holds a NUL character or an unpaired surrogate, which no ledger stores",
                {"where": where},
            )
        checked = _text_checked.set(True)
        try:
            return handler(data)
        finally:
            _text_checked.reset(checked)


class Problem(BaseModel):
    """RFC 9457 problem details, with Heartleaf's stable ``code``."""

    type: str = Field(
        description="A URI naming the rule.",
        examples=["https://heartleaf.dev/problems/insufficient_funds"],
    )
    title: str = Field(
        description="The rule's sentence.",
        examples=["The account does not have enough available funds for this payment."],
    )
    status: int = Field(description="The HTTP status.", examples=[409])
    detail: str = Field(
        description="What happened, for a person.", examples=["Account 2 has 40.00 available."]
    )
    code: str = Field(
        description="Stable machine-readable code; never renamed.", examples=["insufficient_funds"]
    )
    retryable: bool = Field(
        description="Whether the same request can succeed later.", examples=[True]
    )
    field: str | None = Field(
        None,
        description="The offending field, where one is to blame.",
        examples=["postings[0].amount"],
    )
    account_id: int | None = Field(None, description="The account the rule concerns.", examples=[2])
    instance: str | None = Field(
        None, description="The request path.", examples=["/v1/transactions"]
    )
    errors: list[dict[str, Any]] | None = Field(
        None,
        description="Every validation error, for a request that failed several.",
        examples=[[{"field": "postings[0].amount", "message": "Input should be a valid integer"}]],
    )
    extra: dict[str, Any] | None = Field(
        None,
        description="Facts about the refusal (e.g. available funds).",
        examples=[{"available": 4000}],
    )


class Page(BaseModel, Generic[T]):
    items: list[T] = Field(description="This page, in order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last.",
        examples=["MTc5NTU4MzQ3ODM2MjY1OTo1"],
    )


# -- communities and currencies ----------------------------------------------------------


class CommunityCreate(Strict):
    slug: Slug
    name: str = Field(
        min_length=1, max_length=200, description="Display name.", examples=["Riverbend Commons"]
    )
    client_id: ClientId | None = client_id_field()


class CommunityPublic(BaseModel):
    slug: str = Field(description="The community's id in every URL.", examples=["riverbend"])
    name: str = Field(description="Display name.", examples=["Riverbend Commons"])
    status: CommunityStatus = Field(description="active or suspended.", examples=["active"])
    created_at: dt.datetime = Field(description="RFC 3339, UTC.", examples=["2026-11-25T09:00:00Z"])


class CurrencyCreate(Strict):
    code: CurrencyCode
    kind: CurrencyKind = Field(description="hearts, leaves, external or unit.", examples=["hearts"])
    scale: StrictInt = Field(
        ge=0,
        le=SCALE_MAX,
        description="Decimal places: 2 means amounts are hundredths.",
        examples=[2],
    )
    name: str = Field(
        min_length=1, max_length=200, description="Display name.", examples=["Riverbend Hearts"]
    )
    symbol: str = Field(min_length=1, max_length=16, description="Display symbol.", examples=["♡"])
    issuer: Slug | None = Field(
        None,
        description="The issuing community; null means the federation.",
        examples=["riverbend"],
    )
    held_in: HeldIn | None = Field(
        None,
        description="Where it may be held: issuer (its community only), all, or system "
        "(system accounts only). Default from its kind: Hearts issuer, the reference unit "
        "system, the rest all.",
        examples=["issuer"],
    )
    circulation_cap: Annotated[StrictInt, Field(ge=0, le=AMOUNT_MAX)] | None = Field(
        None,
        description="The most that may circulate, in minor units; null: no cap.",
        examples=[1_000_000],
    )
    client_id: ClientId | None = client_id_field()


class CurrencyPolicyUpdate(Strict):
    """What the issuer may change of its currency; fields left out stay as they are."""

    held_in: HeldIn | None = Field(None, description="issuer, all or system.", examples=["issuer"])
    circulation_cap: Annotated[StrictInt, Field(ge=0, le=AMOUNT_MAX)] | None = Field(
        None,
        description="The most that may circulate, in minor units; null removes the cap.",
        examples=[1_000_000],
    )


class IssuanceAccountSupply(BaseModel):
    account_id: int = Field(description="The issuance account.", examples=[1])
    community: str = Field(description="Its community.", examples=["riverbend"])
    issued: int = Field(description="Minor units it put out.", examples=[600000])
    redeemed: int = Field(description="Minor units that came back to it.", examples=[14850])


class SupplyPublic(BaseModel):
    currency: str = Field(description="Currency code.", examples=["HRB"])
    as_of: dt.datetime | None = Field(
        description="The instant asked for; null: now.", examples=["2026-11-25T09:00:00Z"]
    )
    issued: int = Field(description="Minor units its issuance accounts put out.", examples=[1153])
    redeemed: int = Field(description="Minor units that came back to them.", examples=[0])
    in_circulation: int = Field(description="issued minus redeemed.", examples=[1153])
    circulation_cap: int | None = Field(
        description="The issuer's cap; null: none.", examples=[None]
    )
    by_issuance_account: list[IssuanceAccountSupply] = Field(
        description="What each issuance account put out and took back.",
        examples=[[{"account_id": 2, "community": "riverbend", "issued": 250, "redeemed": 0}]],
    )


class CurrencyPublic(BaseModel):
    code: str = Field(description="Currency code.", examples=["HRB"])
    kind: CurrencyKind = Field(description="hearts, leaves, external or unit.", examples=["hearts"])
    scale: int = Field(description="Decimal places of the minor unit.", examples=[2])
    name: str = Field(description="Display name.", examples=["Riverbend Hearts"])
    symbol: str = Field(description="Display symbol.", examples=["♡"])
    issuer: str | None = Field(
        description="Issuing community; null for the federation.", examples=["riverbend"]
    )
    held_in: HeldIn = Field(description="issuer, all or system.", examples=["issuer"])
    circulation_cap: int | None = Field(
        description="The most that may circulate (minor units); null: no cap.", examples=[None]
    )
    created_at: dt.datetime = Field(description="RFC 3339, UTC.", examples=["2026-11-25T09:00:00Z"])


# -- accounts ------------------------------------------------------------------------------


class BalancePublic(BaseModel):
    account_id: int = Field(description="The account.", examples=[2])
    currency: str = Field(description="Currency of every amount here.", examples=["HRB"])
    posted: int = Field(
        description="Credits minus debits that have posted, in minor units.", examples=[10000]
    )
    debits_pending: int = Field(description="Held for pending payments out.", examples=[2500])
    credits_pending: int = Field(
        description="Pending payments in (not spendable yet).", examples=[0]
    )
    available: int = Field(
        description="posted - debits_pending: what can still leave.", examples=[7500]
    )
    as_of: dt.datetime | None = Field(
        description="The instant of an as-of read; null for now.", examples=[None]
    )


class AccountCreate(Strict):
    community: Slug
    currency: CurrencyCode
    type: AccountType = Field(
        description="member, provider, issuance, treasury, clearing, liquidity, fees or rounding.",
        examples=["member"],
    )
    name: str = Field(
        min_length=1,
        max_length=200,
        description="Unique within the community and currency.",
        examples=["ana"],
    )
    min_balance: Limit | None = Field(
        None,
        description="The floor for available funds. Omitted: 0 (no overdraft), except issuance "
        "accounts, which have none. Negative: a mutual-credit line. Null: no floor.",
        examples=[0],
    )
    max_balance: Limit | None = Field(
        None, description="The ceiling for posted + pending credits; null: none.", examples=[500000]
    )
    metadata: Metadata = Field(default_factory=dict)
    client_id: ClientId | None = client_id_field()


class AccountUpdate(Strict):
    min_balance: Limit | None = Field(
        None, description="New floor (null removes it).", examples=[-5000]
    )
    max_balance: Limit | None = Field(
        None, description="New ceiling (null removes it).", examples=[None]
    )
    status: AccountStatus | None = Field(
        None,
        description="open, frozen or closed (closing needs a zero balance).",
        examples=["frozen"],
    )
    metadata: Metadata | None = Field(
        None, description="Replaces the metadata.", examples=[{"shift": "evening"}]
    )


class AccountPublic(BaseModel):
    id: int = Field(description="Account id.", examples=[2])
    community: str = Field(description="Owning community.", examples=["riverbend"])
    currency: str = Field(description="The currency it holds.", examples=["HRB"])
    type: AccountType = Field(description="Account type.", examples=["member"])
    name: str = Field(description="Name within community and currency.", examples=["ana"])
    status: AccountStatus = Field(description="open, frozen or closed.", examples=["open"])
    min_balance: int | None = Field(
        description="Floor for available funds; null: none.", examples=[0]
    )
    max_balance: int | None = Field(description="Ceiling; null: none.", examples=[None])
    metadata: dict[str, Any] = Field(description="Free-form metadata.", examples=[{}])
    balance: BalancePublic = Field(description="The current balance.")
    version: int = Field(description="Changes on every update; the ETag carries it.", examples=[1])
    created_at: dt.datetime = Field(description="RFC 3339, UTC.", examples=["2026-11-25T09:00:00Z"])
    updated_at: dt.datetime = Field(description="RFC 3339, UTC.", examples=["2026-11-25T09:00:00Z"])


class StatementLinePublic(BaseModel):
    entry_id: int = Field(description="History row id.", examples=[7])
    transaction_id: int = Field(description="The transaction that wrote it.", examples=[3])
    kind: EntryKind = Field(
        description="posted, pending, pending_posted, pending_voided or pending_expired.",
        examples=["posted"],
    )
    at: dt.datetime = Field(
        description="Ledger instant: the order of history.", examples=["2026-11-25T09:00:00Z"]
    )
    effective_date: dt.date | None = Field(
        description="The client's effective date (shown, does not reorder).",
        examples=["2026-11-01"],
    )
    amount: int = Field(description="Change to the posted balance (signed).", examples=[-1250])
    debits_pending_change: int = Field(description="Change to pending debits.", examples=[0])
    credits_pending_change: int = Field(description="Change to pending credits.", examples=[0])
    balance: BalancePublic = Field(description="The balance right after this line.")
    counterparty_account_id: int | None = Field(
        description="The other side of the posting.", examples=[3]
    )
    memo: str | None = Field(description="The transaction's memo.", examples=["Childcare, Tuesday"])
    category: str | None = Field(
        description="The transaction's category.", examples=["care:childcare"]
    )


# -- transactions ----------------------------------------------------------------------------


class PostingCreate(Strict):
    source_account_id: AccountId
    destination_account_id: AccountId
    amount: Amount
    currency: CurrencyCode


class PostingPublic(BaseModel):
    index: int = Field(description="Position within the transaction.", examples=[0])
    source_account_id: int = Field(description="Debited account.", examples=[2])
    destination_account_id: int = Field(description="Credited account.", examples=[3])
    amount: int = Field(
        description="Minor units (held, for a pending transaction).", examples=[1250]
    )
    currency: str = Field(description="Currency code.", examples=["HRB"])
    amount_posted: int | None = Field(
        description="For a posted hold: what actually moved.", examples=[None]
    )


class TransactionCreate(Strict):
    postings: list[PostingCreate] = Field(
        min_length=1, max_length=128, description="Applied all together or not at all."
    )
    client_id: ClientId | None = client_id_field()
    memo: str | None = Field(
        None, max_length=500, description="Free text for people.", examples=["Childcare, Tuesday"]
    )
    category: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[a-z0-9_-]+(:[a-z0-9_-]+)*$",
        description="Colon-separated category; filters match prefixes.",
        examples=["care:childcare"],
    )
    external_ref: str | None = Field(
        None,
        max_length=200,
        description="A reference in another system.",
        examples=["INV-2026-11-7"],
    )
    metadata: Metadata = Field(default_factory=dict)
    effective_date: IsoDate | None = Field(
        None,
        description="YYYY-MM-DD. Stored and filterable; does not reorder history.",
        examples=["2026-11-01"],
    )
    pending: StrictBool = Field(
        False, description="Hold the funds now; post or void later.", examples=[False]
    )
    timeout_seconds: StrictInt | None = Field(
        None,
        ge=1,
        le=90 * 86400,
        description="For a pending transaction: seconds until it expires.",
        examples=[3600],
    )


class TransactionPublic(BaseModel):
    id: int = Field(description="Ledger id.", examples=[3])
    client_id: str | None = Field(
        description="Your id for it, if you gave one.", examples=["2026-11-import-0001"]
    )
    status: TransactionStatus = Field(
        description="pending, posted, voided or expired.", examples=["posted"]
    )
    postings: list[PostingPublic] = Field(description="Its postings.")
    memo: str | None = Field(description="Memo.", examples=["Childcare, Tuesday"])
    category: str | None = Field(description="Category.", examples=["care:childcare"])
    external_ref: str | None = Field(description="External reference.", examples=[None])
    metadata: dict[str, Any] = Field(description="Metadata.", examples=[{}])
    effective_date: dt.date | None = Field(description="Effective date.", examples=[None])
    created_at: dt.datetime = Field(
        description="Ledger instant it was written.", examples=["2026-11-25T09:00:00Z"]
    )
    expires_at: dt.datetime | None = Field(
        description="When a pending hold lapses.", examples=[None]
    )
    resolved_at: dt.datetime | None = Field(
        description="When it posted, voided or expired.", examples=["2026-11-25T09:00:00Z"]
    )
    reverses_id: int | None = Field(
        description="The transaction this one reverses.", examples=[None]
    )
    reversed_by_id: int | None = Field(description="The reversal of this one.", examples=[None])


class BatchCreate(Strict):
    transactions: list[TransactionCreate] = Field(
        min_length=1, max_length=8190, description="Up to 8,190 transactions."
    )
    atomic: StrictBool = Field(
        False, description="All or nothing: one refusal refuses the batch.", examples=[False]
    )


class BatchItemResult(BaseModel):
    index: int = Field(description="Position in the request.", examples=[0])
    status: Literal["created", "replayed", "rejected"] = Field(
        description="What happened to this item.", examples=["created"]
    )
    transaction: TransactionPublic | None = Field(description="The transaction, unless rejected.")
    problem: Problem | None = Field(description="Why it was rejected.")


class BatchResult(BaseModel):
    created: int = Field(description="Items written now.", examples=[8190])
    replayed: int = Field(description="Items that replayed an earlier request.", examples=[0])
    rejected: int = Field(description="Items refused.", examples=[0])
    results: list[BatchItemResult] = Field(description="One per item, in order.")


class PendingPost(Strict):
    amounts: list[Annotated[StrictInt, Field(ge=0, le=AMOUNT_MAX)]] | None = Field(
        None,
        max_length=128,
        description="Per posting, the amount to post (0 .. held); omitted: in full.",
        examples=[[1000]],
    )


class ReversalCreate(Strict):
    client_id: ClientId | None = client_id_field()
    memo: str | None = Field(
        None, max_length=500, description="Why it is reversed.", examples=["Entered twice"]
    )


# -- keys and events ---------------------------------------------------------------------------


class KeyCreate(Strict):
    role: Literal["federation", "treasurer", "viewer", "auditor", "member"] = Field(
        description="What the key may do. A member key reads and pays from one member's "
        "accounts only.",
        examples=["treasurer"],
    )
    community: Slug | None = Field(
        None,
        description="For treasurer, viewer and member keys: their community.",
        examples=["riverbend"],
    )
    member: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="For a member key: the member, by the name of its member accounts.",
        examples=["ana"],
    )
    expires_at: InstantText | None = Field(
        None,
        description="When the key stops working (RFC 3339); null: it does not expire.",
        examples=["2027-06-30T00:00:00Z"],
    )
    label: str = Field(
        min_length=1,
        max_length=200,
        description="Who or what uses it.",
        examples=["Riverbend treasurer laptop"],
    )
    client_id: ClientId | None = client_id_field()


class KeyPublic(BaseModel):
    id: int = Field(description="Key id.", examples=[2])
    prefix: str = Field(
        description="The public part of the key (hl_<prefix>_…).", examples=["3f9a1c22"]
    )
    role: str = Field(description="Role.", examples=["treasurer"])
    community: str | None = Field(
        description="Community, for treasurer and viewer keys.", examples=["riverbend"]
    )
    label: str = Field(description="Label.", examples=["Riverbend treasurer laptop"])
    created_at: dt.datetime = Field(description="RFC 3339, UTC.", examples=["2026-11-25T09:00:00Z"])
    last_used_at: dt.datetime | None = Field(
        description="Last authenticated use (to the minute).", examples=[None]
    )
    revoked_at: dt.datetime | None = Field(description="When it was revoked.", examples=[None])
    expires_at: dt.datetime | None = Field(
        description="When it stops working; null: never.", examples=[None]
    )
    member: str | None = Field(description="A member key's member.", examples=[None])


class KeyRotate(Strict):
    old_secret_valid_seconds: StrictInt = Field(
        3600,  # api.app.ROTATION_OVERLAP_DEFAULT_SECONDS
        ge=0,
        le=30 * 86_400,
        description="How long the old secret keeps working, so clients switch without a gap.",
        examples=[3600],
    )


class KeyCreated(KeyPublic):
    secret: str | None = Field(
        description="The key itself: shown once, never again (null on a replay).",
        examples=["hl_3f9a1c22_…"],
    )


class EventPublic(BaseModel):
    sequence: int = Field(
        description="Position in the feed, in commit order, without gaps.", examples=[42]
    )
    kind: EventKind = Field(description="What happened.", examples=["transaction.posted"])
    at: dt.datetime = Field(description="When.", examples=["2026-11-25T09:00:00Z"])
    transaction_id: int | None = Field(description="The transaction concerned.", examples=[3])
    account_id: int | None = Field(description="The account concerned.", examples=[None])
    communities: list[str] = Field(description="Communities concerned.", examples=[["riverbend"]])


class EventPage(BaseModel):
    items: list[EventPublic] = Field(description="Events after the cursor, in order.")
    next_cursor: str = Field(
        description="Pass as `after` to continue; unchanged when nothing new.", examples=["42"]
    )


class Health(BaseModel):
    status: str = Field(description="ok, or what is wrong.", examples=["ok"])
    database: str | None = Field(default=None, description="Database check.", examples=["ok"])
    migrations: str | None = Field(
        default=None, description="Schema revision check.", examples=["at head"]
    )
