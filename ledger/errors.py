"""The one error catalogue.

Every rule Heartleaf enforces has one stable code here, named after the rule that broke.
Codes are listed in the order the validators check them and are never renamed once
published: clients branch on them. Each carries a sentence a treasurer understands, the
HTTP status the API answers with, and whether retrying the same request can succeed.
``api/`` turns a ``LedgerError`` into an RFC 9457 problem; nothing else invents error shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Code(StrEnum):
    # Request shape (checked before anything is read).
    INVALID_REQUEST = "invalid_request"
    POSTINGS_EMPTY = "postings_empty"
    POSTINGS_TOO_MANY = "postings_too_many"
    BATCH_TOO_LARGE = "batch_too_large"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    SAME_ACCOUNT = "same_account"
    TIMEOUT_OUT_OF_RANGE = "timeout_out_of_range"
    # Reference data.
    COMMUNITY_NOT_FOUND = "community_not_found"
    COMMUNITY_EXISTS = "community_exists"
    COMMUNITY_SUSPENDED = "community_suspended"
    CURRENCY_NOT_FOUND = "currency_not_found"
    CURRENCY_EXISTS = "currency_exists"
    SCALE_OUT_OF_RANGE = "scale_out_of_range"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_NAME_TAKEN = "account_name_taken"
    LIMITS_INVALID = "limits_invalid"
    LIMIT_BELOW_BALANCE = "limit_below_balance"
    VERSION_MISMATCH = "version_mismatch"
    ACCOUNT_NOT_EMPTY = "account_not_empty"
    STATUS_CHANGE_INVALID = "status_change_invalid"
    # Authority (ledger/authority.py), checked inside the write like a floor.
    ISSUER_INVALID = "issuer_invalid"
    CURRENCY_NOT_HELD = "currency_not_held"
    ISSUANCE_NOT_AUTHORIZED = "issuance_not_authorized"
    SYSTEM_ACCOUNT = "system_account"
    CIRCULATION_CAP_EXCEEDED = "circulation_cap_exceeded"
    # Transactions, in the order post_transactions checks them.
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    CURRENCY_MISMATCH = "currency_mismatch"
    ACCOUNT_CLOSED = "account_closed"
    ACCOUNT_FROZEN = "account_frozen"
    BALANCE_OUT_OF_RANGE = "balance_out_of_range"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CEILING_EXCEEDED = "ceiling_exceeded"
    BATCH_ITEM_FAILED = "batch_item_failed"
    # Two-phase and corrections.
    TRANSACTION_NOT_FOUND = "transaction_not_found"
    PENDING_EXPIRED = "pending_expired"
    PENDING_ALREADY_POSTED = "pending_already_posted"
    PENDING_ALREADY_VOIDED = "pending_already_voided"
    NOT_PENDING = "not_pending"
    POST_AMOUNT_EXCEEDS_PENDING = "post_amount_exceeds_pending"
    NOT_REVERSIBLE = "not_reversible"
    ALREADY_REVERSED = "already_reversed"
    # Reading.
    CURSOR_INVALID = "cursor_invalid"
    # Exchange (exchange/ raises these; they live here so there is one catalogue).
    RATE_INVALID = "rate_invalid"
    EXCHANGE_NOT_CONFIGURED = "exchange_not_configured"
    VALUATION_MISSING = "valuation_missing"
    ARBITRAGE_CYCLE = "arbitrage_cycle"
    PROTOCOL_NOT_FOUND = "protocol_not_found"
    PROPOSAL_NOT_FOUND = "proposal_not_found"
    APPROVAL_INVALID = "approval_invalid"
    # Governed policy (exchange/governance.py raises these).
    PROPOSAL_EXPIRED = "proposal_expired"
    APPROVER_NOT_ELIGIBLE = "approver_not_eligible"
    APPROVAL_SEAT_TAKEN = "approval_seat_taken"
    VALUATION_BACKDATED = "valuation_backdated"
    CONVERSION_NOT_ALLOWED = "conversion_not_allowed"
    CONVERSION_FORBIDDEN = "conversion_forbidden"
    PROTOCOL_SUSPENDED = "protocol_suspended"
    PROTOCOL_NOT_IN_FORCE = "protocol_not_in_force"
    ACCOUNT_NOT_ELIGIBLE = "account_not_eligible"
    WINDOW_CLOSED = "window_closed"
    CONVERSION_LIMIT_EXCEEDED = "conversion_limit_exceeded"
    CONVERSION_TOO_SMALL = "conversion_too_small"
    QUOTE_NOT_FOUND = "quote_not_found"
    QUOTE_EXPIRED = "quote_expired"
    QUOTE_USED = "quote_used"
    QUOTE_MISMATCH = "quote_mismatch"
    PROTOCOL_CHANGED = "protocol_changed"
    SLIPPAGE_EXCEEDED = "slippage_exceeded"
    # Reciprocity (exchange/reciprocity.py raises these).
    COMMUNITY_CREDIT_LIMIT_EXCEEDED = "community_credit_limit_exceeded"
    CLEARING_OBLIGATIONS_CHANGED = "clearing_obligations_changed"
    SETTLEMENT_REFERENCE_INVALID = "settlement_reference_invalid"
    SETTLEMENT_OBLIGATION_NOT_FOUND = "settlement_obligation_not_found"
    SETTLEMENT_EXCEEDS_OUTSTANDING = "settlement_exceeds_outstanding"
    # The HTTP edge (api/ raises these; they live here so there is one catalogue).
    MALFORMED_BODY = "malformed_body"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    KEY_NOT_FOUND = "key_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Rule:
    sentence: str
    http_status: int
    retryable: bool


CATALOGUE: dict[Code, Rule] = {
    Code.INVALID_REQUEST: Rule("The request is not well formed.", 422, False),
    Code.POSTINGS_EMPTY: Rule("A transaction needs at least one posting.", 422, False),
    Code.POSTINGS_TOO_MANY: Rule("A transaction has more postings than allowed.", 422, False),
    Code.BATCH_TOO_LARGE: Rule("A batch holds at most 8,190 transactions.", 422, False),
    Code.AMOUNT_OUT_OF_RANGE: Rule(
        "Amounts are whole minor units from 1 to 9,007,199,254,740,991.", 422, False
    ),
    Code.SAME_ACCOUNT: Rule("A posting cannot pay an account into itself.", 422, False),
    Code.TIMEOUT_OUT_OF_RANGE: Rule(
        "A hold must expire between 1 second and 90 days from now.", 422, False
    ),
    Code.COMMUNITY_NOT_FOUND: Rule("There is no such community.", 404, False),
    Code.COMMUNITY_EXISTS: Rule("A community with this slug already exists.", 409, False),
    Code.COMMUNITY_SUSPENDED: Rule(
        "This community is suspended: it opens no accounts and makes or receives no payments.",
        409,
        False,
    ),
    Code.CURRENCY_NOT_FOUND: Rule("There is no such currency.", 404, False),
    Code.CURRENCY_EXISTS: Rule("A currency with this code already exists.", 409, False),
    Code.SCALE_OUT_OF_RANGE: Rule("A currency has between 0 and 8 decimal places.", 422, False),
    Code.ACCOUNT_NOT_FOUND: Rule("There is no such account.", 404, False),
    Code.ACCOUNT_NAME_TAKEN: Rule(
        "This community already has an account of that name in that currency.", 409, False
    ),
    Code.LIMITS_INVALID: Rule(
        "The floor must not be above the ceiling, and a ceiling cannot be negative.", 422, False
    ),
    Code.LIMIT_BELOW_BALANCE: Rule(
        "The account's current balance already lies outside the new limits.", 409, False
    ),
    Code.VERSION_MISMATCH: Rule(
        "The account changed since you read it; read it again and retry.", 412, True
    ),
    Code.ACCOUNT_NOT_EMPTY: Rule(
        "Only an account at zero with nothing pending can be closed.", 409, False
    ),
    Code.STATUS_CHANGE_INVALID: Rule("A closed account cannot be reopened.", 409, False),
    Code.ISSUER_INVALID: Rule(
        "Hearts are issued by a community; Leaves, external money and the reference unit by "
        "the federation.",
        422,
        False,
    ),
    Code.CURRENCY_NOT_HELD: Rule(
        "The currency's issuer does not let this community hold it.", 403, False
    ),
    Code.ISSUANCE_NOT_AUTHORIZED: Rule(
        "Only a currency's issuer may issue it or grant credit below zero in it.", 403, False
    ),
    Code.SYSTEM_ACCOUNT: Rule(
        "This account belongs to the system: only the operation that owns it moves it.",
        403,
        False,
    ),
    Code.CIRCULATION_CAP_EXCEEDED: Rule(
        "The payment would put more of this currency in circulation than its issuer allows.",
        409,
        False,
    ),
    Code.IDEMPOTENCY_CONFLICT: Rule(
        "This id was already used for a different request.", 409, False
    ),
    Code.IDEMPOTENCY_IN_PROGRESS: Rule(
        "A request with this id is still being carried out; retry in a few seconds to get "
        "its answer.",
        409,
        True,
    ),
    Code.CURRENCY_MISMATCH: Rule(
        "The posting's currency is not the currency both accounts hold.", 422, False
    ),
    Code.ACCOUNT_CLOSED: Rule("The account is closed.", 409, False),
    Code.ACCOUNT_FROZEN: Rule("The account is frozen: nothing moves in or out.", 409, False),
    Code.BALANCE_OUT_OF_RANGE: Rule(
        "The account's balance would leave the range a ledger can hold.", 422, False
    ),
    Code.INSUFFICIENT_FUNDS: Rule(
        "The account does not have enough available funds for this payment.", 409, True
    ),
    Code.CEILING_EXCEEDED: Rule("The payment would take the account above its ceiling.", 409, True),
    Code.BATCH_ITEM_FAILED: Rule(
        "The batch was atomic and another transaction in it was rejected.", 409, False
    ),
    Code.TRANSACTION_NOT_FOUND: Rule("There is no such transaction.", 404, False),
    Code.PENDING_EXPIRED: Rule("The hold expired before it was posted.", 409, False),
    Code.PENDING_ALREADY_POSTED: Rule("The hold was already posted.", 409, False),
    Code.PENDING_ALREADY_VOIDED: Rule("The hold was already voided.", 409, False),
    Code.NOT_PENDING: Rule("Only a pending transaction can be posted or voided.", 409, False),
    Code.POST_AMOUNT_EXCEEDS_PENDING: Rule(
        "A hold can be posted for at most the amount it holds.", 422, False
    ),
    Code.NOT_REVERSIBLE: Rule("Only a posted transaction can be reversed.", 409, False),
    Code.ALREADY_REVERSED: Rule("The transaction was already reversed.", 409, False),
    Code.CURSOR_INVALID: Rule("The page cursor is not one Heartleaf issued.", 422, False),
    Code.RATE_INVALID: Rule(
        "A rate is a positive exact decimal or fraction, such as 0.045 or 9/200.", 422, False
    ),
    Code.EXCHANGE_NOT_CONFIGURED: Rule(
        "The federation has not set its reference unit and own community yet.", 409, False
    ),
    Code.VALUATION_MISSING: Rule(
        "The currency has no valuation in force at that time.", 409, False
    ),
    Code.ARBITRAGE_CYCLE: Rule(
        "These rates would let value grow by converting round a circle of currencies.", 409, False
    ),
    Code.PROTOCOL_NOT_FOUND: Rule("There is no exchange protocol for this pair.", 404, False),
    Code.PROPOSAL_NOT_FOUND: Rule(
        "There is no such protocol change waiting for approval.", 404, False
    ),
    Code.APPROVAL_INVALID: Rule(
        "A change is approved by federation keys other than the one that proposed it, once each.",
        409,
        False,
    ),
    Code.PROPOSAL_EXPIRED: Rule(
        "The proposed change expired before it had the approvals it needed; propose it again.",
        409,
        False,
    ),
    Code.APPROVER_NOT_ELIGIBLE: Rule(
        "This key's approval does not count for this change: the federation's settings say "
        "whose approvals count, and a community never approves its own credit line.",
        403,
        False,
    ),
    Code.APPROVAL_SEAT_TAKEN: Rule(
        "Each community counts once, and a key of this community already proposed or "
        "approved this change; a key of another community may approve it.",
        409,
        False,
    ),
    Code.VALUATION_BACKDATED: Rule(
        "A valuation cannot take effect before the one already in force for that currency; "
        "give an effective_from at or after it, or none for now.",
        409,
        False,
    ),
    Code.CONVERSION_NOT_ALLOWED: Rule(
        "These currencies do not convert: the federation has set no protocol for the pair.",
        409,
        False,
    ),
    Code.CONVERSION_FORBIDDEN: Rule(
        "The federation forbids converting between these currencies.", 409, False
    ),
    Code.PROTOCOL_SUSPENDED: Rule("The exchange protocol is suspended for now.", 409, True),
    Code.PROTOCOL_NOT_IN_FORCE: Rule(
        "The exchange protocol is not in force at this time.", 409, True
    ),
    Code.ACCOUNT_NOT_ELIGIBLE: Rule("This account may not make this conversion.", 403, False),
    Code.WINDOW_CLOSED: Rule("The exchange window for this pair is closed now.", 409, True),
    Code.CONVERSION_LIMIT_EXCEEDED: Rule(
        "The conversion would pass a daily or monthly limit of the protocol.", 409, True
    ),
    Code.CONVERSION_TOO_SMALL: Rule(
        "The amount is too small to deliver anything after fees and rounding.", 422, False
    ),
    Code.QUOTE_NOT_FOUND: Rule("There is no such quote.", 404, False),
    Code.QUOTE_EXPIRED: Rule("The quote expired; ask for a new one.", 409, True),
    Code.QUOTE_USED: Rule("The quote was already used for a conversion.", 409, False),
    Code.QUOTE_MISMATCH: Rule(
        "The quote was made for other currencies or another account.", 422, False
    ),
    Code.PROTOCOL_CHANGED: Rule(
        "The exchange protocol changed since the quote; ask for a new one.", 409, True
    ),
    Code.SLIPPAGE_EXCEEDED: Rule(
        "The current rate is worse than the slippage you allowed.", 409, True
    ),
    Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED: Rule(
        "The payment would take a community past the most it may owe the rest of the network.",
        409,
        True,
    ),
    Code.CLEARING_OBLIGATIONS_CHANGED: Rule(
        "The obligations between communities changed since this clearing was proposed; "
        "ask for a new proposal.",
        409,
        False,
    ),
    Code.SETTLEMENT_REFERENCE_INVALID: Rule(
        "A settlement names the obligation it pays in metadata.settles (debtor, creditor, "
        "basis) and pays it from the debtor's community to the creditor's, in valued currencies.",
        422,
        False,
    ),
    Code.SETTLEMENT_OBLIGATION_NOT_FOUND: Rule(
        "The settlement plan in force (or the latest executed clearing) has no such obligation "
        "left to pay; read the plan again.",
        409,
        False,
    ),
    Code.SETTLEMENT_EXCEEDS_OUTSTANDING: Rule(
        "The settlement pays more than is outstanding on the obligation it names.", 409, False
    ),
    Code.MALFORMED_BODY: Rule("The request body is not valid JSON.", 400, False),
    Code.PAYLOAD_TOO_LARGE: Rule("The request body is larger than Heartleaf accepts.", 413, False),
    Code.UNAUTHENTICATED: Rule(
        "Send a valid API key as 'Authorization: Bearer <key>'.", 401, False
    ),
    Code.FORBIDDEN: Rule("Your key's role does not allow this.", 403, False),
    Code.KEY_NOT_FOUND: Rule("There is no such API key.", 404, False),
    Code.NOT_FOUND: Rule("There is nothing at this address.", 404, False),
    Code.METHOD_NOT_ALLOWED: Rule("This address does not accept that method.", 405, False),
    Code.INTERNAL_ERROR: Rule(
        "Heartleaf failed on its side; nothing was written. Retry, and report it if it persists.",
        500,
        True,
    ),
}


class LedgerError(Exception):
    """A rule refused an operation. Carries the code, a sentence and where it applies."""

    def __init__(
        self,
        code: Code,
        detail: str | None = None,
        *,
        account_id: int | None = None,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.rule = CATALOGUE[code]
        self.detail = detail or self.rule.sentence
        self.account_id = account_id
        self.field = field
        self.extra = extra or {}
        super().__init__(f"{code}: {self.detail}")


class TransactionRefusedError(LedgerError):
    """An observer's refusal of one transaction of a write (a reciprocity credit line).

    A batch refuses that draft alone and judges the drafts after it again without it, as
    it does for the ledger's own rules; anywhere else it is the write's ``LedgerError``."""

    def __init__(
        self,
        transaction_id: int,
        code: Code,
        detail: str | None = None,
        *,
        account_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(code, detail, account_id=account_id, extra=extra)
        self.transaction_id = transaction_id


# The refusals many places raise, each with one detail: what is missing, and where to look
# for what exists. Another community's record is refused exactly as a missing one.


def account_not_found(account_id: int) -> LedgerError:
    return LedgerError(
        Code.ACCOUNT_NOT_FOUND,
        f"There is no account {account_id} among those this key may use; GET /v1/accounts "
        "lists them.",
        account_id=account_id,
    )


def transaction_not_found(transaction_id: int) -> LedgerError:
    return LedgerError(
        Code.TRANSACTION_NOT_FOUND,
        f"There is no transaction {transaction_id} among those this key may read; GET "
        "/v1/transactions lists them.",
        field="transaction_id",
    )


def community_not_found(slug: str, field: str = "community") -> LedgerError:
    return LedgerError(
        Code.COMMUNITY_NOT_FOUND,
        f"There is no community {slug!r} that this key may read; GET /v1/communities lists "
        "them by slug.",
        field=field,
    )


def currency_not_found(code: str, field: str = "currency") -> LedgerError:
    return LedgerError(
        Code.CURRENCY_NOT_FOUND,
        f"There is no currency {code!r}; GET /v1/currencies lists them by code.",
        field=field,
    )


def account_frozen(account_id: int) -> LedgerError:
    return LedgerError(
        Code.ACCOUNT_FROZEN,
        f"Account {account_id} is frozen: nothing moves in or out until its community "
        "unfreezes it (PATCH /v1/accounts/{id} with status open).",
        account_id=account_id,
    )


def already_reversed(transaction_id: int) -> LedgerError:
    return LedgerError(
        Code.ALREADY_REVERSED,
        f"Transaction {transaction_id} was already reversed, and a transaction is reversed "
        "at most once; read it to find its reversal (reversed_by_id).",
        field="transaction_id",
    )


def proposal_not_found(proposal_id: int) -> LedgerError:
    return LedgerError(
        Code.PROPOSAL_NOT_FOUND,
        f"There is no proposal {proposal_id} that this key may see; GET "
        "/v1/governance/proposals lists them.",
        field="proposal_id",
    )
