"""Exchange protocols, quotes and conversions, built on the ledger.

A conversion is an ordinary balanced ledger transaction, written through
``Ledger.post_transaction`` with a ``WriteHook`` so that the exchange rules (protocol in
force, eligibility, windows, limits, the quote) are checked inside the same unit of work
that moves the money, after the accounts are locked:

    payer            -> liquidity[from]   source_used
    payer            -> fees[from]        fee          (if any)
    payer            -> rounding[from]    residue      (if any)
    liquidity[to]    -> payee             target

Every conversion of a pair posts to ``liquidity[from]``, so concurrent conversions of the
pair queue on that account's lock: the limit sums read inside the hook cannot be passed
jointly. The arithmetic lives in ``exchange.rates``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from sqlalchemy import Connection, RowMapping

from exchange import governance, rates
from exchange import repository as repo
from exchange.model import (
    LIMIT_NAMES,
    PROPOSAL_SECONDS_DEFAULT,
    Proposal,
    ProtocolSpec,
    ProtocolVersion,
    Quote,
    Settings,
    Signatory,
    Valuation,
    Window,
    next_opening,
)
from ledger import authority
from ledger import repository as ledger_repository
from ledger.database import run_in_transaction
from ledger.errors import Code, LedgerError, community_not_found, currency_not_found
from ledger.model import (
    Account,
    AccountType,
    CurrencyKind,
    EventKind,
    Outcome,
    PostingDraft,
    Transaction,
    TransactionDraft,
)
from ledger.money import BALANCE_MAX
from ledger.service import Ledger, record_events

if TYPE_CHECKING:
    from exchange.reciprocity import CreditLine, Reciprocity

T = TypeVar("T")

BPS = 10_000
QUOTE_SECONDS_DEFAULT = 60
FEDERATION_ACCOUNTS = {
    AccountType.LIQUIDITY: "liquidity",
    AccountType.FEES: "fees",
    AccountType.ROUNDING: "rounding",
}
# Who changes settings from the Python API by default: whoever holds the database.
OPERATOR = Signatory("operator", governance.OPERATOR)


@dataclass(frozen=True, slots=True)
class Priced:
    """A conversion priced under one protocol version at one instant."""

    version: ProtocolVersion
    rate: Fraction
    conversion: rates.Conversion
    valuation_from: Fraction | None
    valuation_to: Fraction | None


class Exchange:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.engine = ledger.engine
        self.clock = ledger.clock
        self._federation_ids: dict[tuple[str, str, AccountType], int] = {}
        self.governance = governance.Governance(
            {
                governance.Kind.EXCHANGE_SETTINGS: _SettingsPolicy(self),
                governance.Kind.VALUATION: _ValuationPolicy(self),
                governance.Kind.PROTOCOL_VERSION: _ProtocolPolicy(self),
                governance.Kind.CREDIT_LINE: _CreditLinePolicy(self),
            }
        )

    def _write(self, work: Callable[[Connection], T]) -> T:
        return run_in_transaction(self.engine, work, write=True)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return run_in_transaction(self.engine, work, write=False)

    # -- governance -----------------------------------------------------------------------------

    def proposals(
        self, *, state: str | None = "pending", kind: str | None = None, limit: int = 100
    ) -> list[Proposal]:
        """Proposals of policy changes, newest first: by default those pending now."""
        now = self.clock()
        return self._read(
            lambda connection: self.governance.listing(
                connection,
                now,
                state=None if state is None else governance.State(state),
                kind=None if kind is None else governance.Kind(kind),
                limit=limit,
            )
        )

    def proposal(self, proposal_id: int) -> Proposal:
        now = self.clock()
        return self._read(lambda connection: self.governance.get(connection, proposal_id, now))

    def approve_proposal(self, proposal_id: int, *, by: str | Signatory) -> Proposal:
        """Record one approval; the change comes into force with the last one needed, in
        the same unit of work (see ``exchange.governance``)."""
        return self._decide(proposal_id, _signatory(by), approve=True, reason=None)

    def reject_proposal(self, proposal_id: int, *, by: str | Signatory, reason: str) -> Proposal:
        """Reject a pending proposal (or withdraw one's own): it never comes into force."""
        return self._decide(proposal_id, _signatory(by), approve=False, reason=reason)

    def _decide(
        self, proposal_id: int, by: Signatory, *, approve: bool, reason: str | None
    ) -> Proposal:
        def work(connection: Connection) -> governance.Decided:
            return self.governance.decide(
                connection, proposal_id, by=by, approve=approve, now=self.clock(), reason=reason
            )

        decided = self._write(work)
        if isinstance(decided.result, ProtocolVersion):
            self._open_accounts_for(decided.result)
        return decided.proposal

    # -- settings -----------------------------------------------------------------------------

    def configure(
        self,
        *,
        reference_unit: str,
        federation_community: str,
        approvals_required: int = 0,
        quote_seconds: int = QUOTE_SECONDS_DEFAULT,
        approvers: str = "federation",
        proposal_seconds: int = PROPOSAL_SECONDS_DEFAULT,
        by: str | Signatory = OPERATOR,
        reason: str = "Exchange settings",
    ) -> Settings | Proposal:
        """Name the reference unit (a currency of kind ``unit``), the community that owns
        the federation's liquidity, fee and rounding accounts, and the approval rule.

        A change of settings is governed like every change of policy: the first settings,
        and any change while ``approvals_required`` is 0, apply at once (answered with the
        new ``Settings``); otherwise the change waits for the approvals the settings in
        force ask for (answered with its ``Proposal``). Settings equal to those in force
        change nothing and are answered with them."""
        unit = self.ledger.get_currency(reference_unit)
        if unit.kind != CurrencyKind.UNIT:
            raise LedgerError(
                Code.INVALID_REQUEST,
                "The reference unit must be a currency of kind 'unit'.",
                field="reference_unit",
            )
        self.ledger.get_community(federation_community)
        wanted = Settings(
            reference_unit,
            federation_community,
            approvals_required,
            quote_seconds,
            approvers,
            proposal_seconds,
        )
        _check_settings(wanted)
        signatory = _signatory(by)

        def work(connection: Connection) -> Settings | Proposal:
            current = repo.settings(connection, lock=True)
            if current is not None and _settings_from_row(current) == wanted:
                return wanted
            decided = self.governance.submit(
                connection,
                governance.Kind.EXCHANGE_SETTINGS,
                "settings",
                _settings_change(wanted),
                by=signatory,
                reason=reason,
                now=self.clock(),
            )
            return decided.proposal if decided.result is None else cast(Settings, decided.result)

        return self._write(work)

    def settings(self) -> Settings:
        return self._read(_settings)

    # -- valuations -----------------------------------------------------------------------------

    def set_valuation(
        self,
        currency: str,
        rate: Fraction,
        *,
        by: str | Signatory,
        reason: str,
        effective_from: dt.datetime | None = None,
    ) -> Valuation | Proposal:
        """Value one major unit of ``currency`` in the reference unit from now (or
        ``effective_from``, never before the valuation in force) on: at once when the
        federation asks for no approvals, else once approved (answered with the
        ``Proposal``). Without ``effective_from`` it takes effect when it comes into force."""
        if not isinstance(rate, Fraction) or rate <= 0:
            raise LedgerError(
                Code.RATE_INVALID,
                f"rate {rate!r} is not a positive exact number; give one such as 0.045 or 9/200.",
                field="rate",
            )
        self.ledger.get_currency(currency)
        signatory = _signatory(by)
        change = {
            "currency": currency,
            "rate": rates.format_rate(rate),
            "effective_from": None if effective_from is None else effective_from.isoformat(),
        }

        def work(connection: Connection) -> Valuation | Proposal:
            decided = self.governance.submit(
                connection,
                governance.Kind.VALUATION,
                currency,
                change,
                by=signatory,
                reason=reason,
                now=self.clock(),
            )
            return decided.proposal if decided.result is None else cast(Valuation, decided.result)

        return self._write(work)

    def valuation_at(self, currency: str, at: dt.datetime | None = None) -> Valuation:
        held = self.ledger.get_currency(currency)
        instant = at or self.clock()

        def work(connection: Connection) -> Valuation:
            row = repo.valuation_at(connection, held.id, instant)
            if row is None:
                raise LedgerError(
                    Code.VALUATION_MISSING,
                    f"{currency} has no valuation in force at {instant:%Y-%m-%d %H:%M:%S} UTC; "
                    "ask about a later instant, or have the federation value it "
                    "(POST /v1/valuations).",
                    field="currency",
                )
            return _valuation(currency, row)

        return self._read(work)

    def valuation_history(self, currency: str) -> list[Valuation]:
        held = self.ledger.get_currency(currency)
        return self._read(
            lambda connection: [
                _valuation(currency, row) for row in repo.valuation_history(connection, held.id)
            ]
        )

    # -- protocols ------------------------------------------------------------------------------

    def propose(
        self,
        spec: ProtocolSpec,
        *,
        by: str | Signatory,
        reason: str,
        expected_version: int | None = None,
    ) -> ProtocolVersion:
        """A new version of the pair's protocol. It is in force at once when the federation
        asks for no approvals; otherwise once enough approvals arrive (``exchange.governance``:
        ``approve``, or ``approve_proposal`` with its ``proposal_id``).

        ``expected_version``, when given, is the pair's newest version number as the caller
        read it (0: none yet); a change made since refuses this one with
        ``version_mismatch``."""
        return self._propose(spec, _signatory(by), reason, expected_version, emergency=False)

    def _propose(
        self,
        spec: ProtocolSpec,
        by: Signatory,
        reason: str,
        expected_version: int | None,
        *,
        emergency: bool,
    ) -> ProtocolVersion:
        source = self.ledger.get_currency(spec.from_currency)
        target = self.ledger.get_currency(spec.to_currency)
        if source.id == target.id:
            raise LedgerError(
                Code.INVALID_REQUEST, "A protocol converts between two currencies.", field="to"
            )
        _check_spec(spec)
        if spec.fee_account_id is not None:
            fee_account = self.ledger.get_account(spec.fee_account_id)
            if fee_account.currency != spec.from_currency:
                raise LedgerError(
                    Code.CURRENCY_MISMATCH,
                    "The fee account must hold the source currency.",
                    account_id=spec.fee_account_id,
                    field="fee_account_id",
                )

        def work(connection: Connection) -> ProtocolVersion:
            now = self.clock()
            _settings(connection, lock=True)
            wanted = replace(spec, effective_from=spec.effective_from or now)
            if emergency:
                # A suspension copies the version in force as this unit of work reads it,
                # so the emergency path can never carry any other change.
                row = repo.protocol_in_force(connection, source.id, target.id, now)
                if row is None:
                    raise _no_protocol(spec.from_currency, spec.to_currency)
                in_force = protocol_version_from_row(connection, row)
                wanted = replace(in_force.spec, suspended=True, effective_from=now)
            if wanted.allowed and wanted.fixed_rate is None:
                for code, held_id in (
                    (wanted.from_currency, source.id),
                    (wanted.to_currency, target.id),
                ):
                    if repo.valuation_at(connection, held_id, now) is None:
                        raise LedgerError(
                            Code.VALUATION_MISSING,
                            f"{code} has no valuation, so a rate cannot be derived for it.",
                            field="rate",
                        )
            number = repo.next_protocol_version(connection, source.id, target.id)
            if expected_version is not None and expected_version != number - 1:
                raise LedgerError(
                    Code.VERSION_MISMATCH,
                    f"The protocol for {wanted.from_currency} -> {wanted.to_currency} is at "
                    f"version {number - 1} now; read it again and retry.",
                    extra={"version": number - 1},
                )
            version_id = repo.insert_protocol_version(
                connection,
                {
                    **_spec_values(wanted, source.id, target.id),
                    "version": number,
                    "state": "proposed",
                    "proposed_at": now,
                    "proposed_by": by.key,
                    "reason": reason,
                    "approvals": [],
                    "activated_at": None,
                },
            )
            decided = self.governance.submit(
                connection,
                governance.Kind.PROTOCOL_VERSION,
                f"{wanted.from_currency}->{wanted.to_currency}",
                {"protocol_version_id": version_id, "version": number},
                by=by,
                reason=reason,
                now=now,
                emergency=emergency,
            )
            repo.update_protocol_version(
                connection, version_id, {"proposal_id": decided.proposal.id}
            )
            row = repo.protocol_version_by_id(connection, version_id)
            assert row is not None
            return protocol_version_from_row(connection, row, now)

        return self._open_accounts_for(self._write(work))

    def _open_accounts_for(self, version: ProtocolVersion) -> ProtocolVersion:
        """Open the federation's accounts a pair's conversions post to once its protocol is
        in force, so that a conversion never has to open one: a refused conversion then
        leaves nothing behind."""
        spec = version.spec
        if version.state == "active" and spec.allowed:
            settings = self.settings()
            for currency, kind in (
                (spec.from_currency, AccountType.LIQUIDITY),
                (spec.to_currency, AccountType.LIQUIDITY),
                (spec.from_currency, AccountType.FEES),
                (spec.from_currency, AccountType.ROUNDING),
            ):
                self._federation_account(settings, currency, kind)
        return version

    def approve(self, version_id: int, *, by: str | Signatory) -> ProtocolVersion:
        """Approve a proposed protocol version (its governance proposal); the version comes
        into force with the last approval needed."""
        signatory = _signatory(by)

        def work(connection: Connection) -> ProtocolVersion:
            now = self.clock()
            _settings(connection, lock=True)
            row = repo.protocol_version_by_id(connection, version_id)
            if row is None or row["state"] != "proposed" or row["proposal_id"] is None:
                raise _no_version_proposed(version_id)
            self.governance.decide(
                connection, row["proposal_id"], by=signatory, approve=True, now=now
            )
            updated = repo.protocol_version_by_id(connection, version_id)
            assert updated is not None
            return protocol_version_from_row(connection, updated, now)

        return self._open_accounts_for(self._write(work))

    def suspend(
        self, from_currency: str, to_currency: str, *, by: str | Signatory, reason: str
    ) -> ProtocolVersion:
        """Suspend the pair at once (an emergency needs no approvals): a copy of the version
        in force, suspended, recorded as an applied proposal marked as an emergency."""
        current = self.protocol_in_force(from_currency, to_currency)
        if current is None:
            raise _no_protocol(from_currency, to_currency)
        return self._propose(current.spec, _signatory(by), reason, None, emergency=True)

    def resume(
        self, from_currency: str, to_currency: str, *, by: str | Signatory, reason: str
    ) -> ProtocolVersion:
        """Propose lifting a suspension: an ordinary change, approved like any other."""
        current = self.protocol_in_force(from_currency, to_currency)
        if current is None:
            raise _no_protocol(from_currency, to_currency)
        return self.propose(
            replace(current.spec, suspended=False, effective_from=self.clock()),
            by=by,
            reason=reason,
        )

    # -- community credit lines -----------------------------------------------------------------

    def set_credit_line(
        self, community: str, credit_limit: int | None, *, by: str | Signatory, reason: str
    ) -> CreditLine | Proposal:
        """Propose the most ``community`` may owe the rest of the network (None: no line).
        Applied by ``Reciprocity.set_credit_line`` inside the governed unit of work, at once
        when the federation asks for no approvals, else once approved; the community's own
        keys never approve it."""
        signatory = _signatory(by)
        self.ledger.get_community(community)

        def work(connection: Connection) -> CreditLine | Proposal:
            decided = self.governance.submit(
                connection,
                governance.Kind.CREDIT_LINE,
                community,
                {"community": community, "credit_limit": credit_limit},
                by=signatory,
                reason=reason,
                now=self.clock(),
            )
            return (
                decided.proposal if decided.result is None else cast("CreditLine", decided.result)
            )

        return self._write(work)

    def protocol_in_force(
        self, from_currency: str, to_currency: str, at: dt.datetime | None = None
    ) -> ProtocolVersion | None:
        source = self.ledger.get_currency(from_currency)
        target = self.ledger.get_currency(to_currency)
        instant = at or self.clock()

        def work(connection: Connection) -> ProtocolVersion | None:
            row = repo.protocol_in_force(connection, source.id, target.id, instant)
            return None if row is None else protocol_version_from_row(connection, row)

        return self._read(work)

    def rate_in_force(self, from_currency: str, to_currency: str) -> Fraction | None:
        """The minor rate a conversion of the pair would be priced at now (target minor
        units per source minor unit, before fees), or None when it would not convert."""
        version = self.protocol_in_force(from_currency, to_currency)
        if version is None or not version.spec.allowed:
            return None
        try:
            return self._rate(version, self.clock())[0]
        except LedgerError:
            return None

    def protocol_versions(self, from_currency: str, to_currency: str) -> list[ProtocolVersion]:
        source = self.ledger.get_currency(from_currency)
        target = self.ledger.get_currency(to_currency)
        now = self.clock()
        return self._read(
            lambda connection: [
                protocol_version_from_row(connection, row, now)
                for row in repo.protocol_versions_of(connection, source.id, target.id)
            ]
        )

    def protocols(self) -> list[ProtocolVersion]:
        """The newest version of every pair (in force or waiting for approval)."""

        now = self.clock()

        def work(connection: Connection) -> list[ProtocolVersion]:
            newest = []
            for from_id, to_id in repo.protocol_pairs(connection):
                versions = repo.protocol_versions_of(connection, from_id, to_id)
                newest.append(protocol_version_from_row(connection, versions[-1], now))
            return sorted(newest, key=lambda v: (v.spec.from_currency, v.spec.to_currency))

        return self._read(work)

    # -- quotes and conversions ------------------------------------------------------------------

    def quote(
        self,
        *,
        payer_account_id: int,
        to_currency: str,
        source_amount: int | None = None,
        target_amount: int | None = None,
    ) -> Quote:
        """Price a conversion for the paying account and keep the price for a while."""
        payer = self.ledger.get_account(payer_account_id)
        now = self.clock()
        priced = self._price(payer, to_currency, source_amount, target_amount, now)
        # A quote the conversion would refuse is no use to anyone: refuse it now. Limits
        # are left to the conversion, which counts what was converted by then.
        _check_protocol_admits(priced.version.spec, payer, now)
        quote_seconds = self.settings().quote_seconds
        conversion = priced.conversion
        quote = Quote(
            id="q_" + secrets.token_urlsafe(18),
            protocol_version_id=priced.version.id,
            payer_account_id=payer.id,
            from_currency=payer.currency,
            to_currency=to_currency,
            source_amount=conversion.source_amount,
            fee=conversion.fee,
            source_used=conversion.source_used,
            residue=conversion.residue,
            target_amount=conversion.target_amount,
            rate=priced.rate,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=quote_seconds),
            transaction_id=None,
        )
        from_id = self.ledger.get_currency(payer.currency).id
        to_id = self.ledger.get_currency(to_currency).id
        self._write(
            lambda connection: repo.insert_quote(
                connection,
                {
                    "id": quote.id,
                    "protocol_version_id": quote.protocol_version_id,
                    "payer_account_id": quote.payer_account_id,
                    "from_currency_id": from_id,
                    "to_currency_id": to_id,
                    "source_amount": quote.source_amount,
                    "fee": quote.fee,
                    "source_used": quote.source_used,
                    "residue": quote.residue,
                    "target_amount": quote.target_amount,
                    "rate": rates.format_rate(quote.rate),
                    "created_at": now,
                    "expires_at": quote.expires_at,
                    "transaction_id": None,
                },
            )
        )
        return quote

    def convert(
        self,
        *,
        payer_account_id: int,
        payee_account_id: int,
        quote_id: str | None = None,
        source_amount: int | None = None,
        target_amount: int | None = None,
        max_slippage_bps: int | None = None,
        client_id: str | None = None,
        scope: str = "",
        memo: str | None = None,
        category: str | None = None,
        metadata: dict[str, Any] | None = None,
        actor: authority.Actor = authority.OPERATOR,
        expected_rate: Fraction | None = None,
    ) -> Outcome:
        """Pay ``payee`` in its own currency from ``payer``'s, converting inside one
        transaction: at a quote's price, or at the current price within ``max_slippage_bps``
        of the protocol's rate (fees and rounding included).

        ``actor`` must be allowed to spend from the payer (checked inside the write); the
        federation's liquidity, fee and rounding accounts move as the exchange's own
        operation, which no key can do by itself.

        Without a quote, ``expected_rate`` is the protocol rate the client priced with:
        slippage is measured against it, and without ``max_slippage_bps`` the rate in force
        may not be worse than it. A retry with the same client id must repeat every field
        of the request."""
        payer = self.ledger.get_account(payer_account_id)
        payee = self.ledger.get_account(payee_account_id)
        request = _conversion_request_hash(
            payer.id,
            payee.id,
            quote_id,
            source_amount,
            target_amount,
            max_slippage_bps,
            expected_rate,
            memo,
            category,
            metadata,
        )
        if client_id is not None:
            replayed = self._replay(
                client_id,
                scope,
                (payer.id, payee.id, quote_id, source_amount, target_amount, memo, category),
                request,
            )
            if replayed is not None:
                return replayed
        now = self.clock()
        quote_row = None
        if quote_id is not None:
            quote_row = self._read(lambda connection: repo.quote_by_id(connection, quote_id))
            if quote_row is None:
                raise LedgerError(
                    Code.QUOTE_NOT_FOUND,
                    f"There is no quote {quote_id!r}; ask for one with POST /v1/quotes, or "
                    "convert without quote_id.",
                    field="quote_id",
                )
            priced = self._priced_quote(quote_row, payer, payee)
        else:
            priced = self._price(payer, payee.currency, source_amount, target_amount, now)
            if max_slippage_bps is not None or expected_rate is not None:
                _check_slippage(priced, max_slippage_bps, expected_rate)
        conversion = priced.conversion
        settings = self.settings()
        hook = _ConversionHook(self, payer, payee, priced, quote_id)
        needed = [(payer.currency, AccountType.LIQUIDITY), (payee.currency, AccountType.LIQUIDITY)]
        fee_account = priced.version.spec.fee_account_id
        if conversion.fee and fee_account is None:
            needed.append((payer.currency, AccountType.FEES))
        if conversion.residue:
            needed.append((payer.currency, AccountType.ROUNDING))
        accounts = {
            need: self._federation_account(settings, *need, open_missing=False) for need in needed
        }
        if None in accounts.values():
            # The federation's accounts open on a pair's first conversion; check the rules
            # first, so that a conversion they refuse leaves no trace, not even an account.
            self._read(lambda connection: hook.check(connection, self.clock()))
            accounts = {need: self._federation_account(settings, *need) for need in needed}
        ids = {need: account for need, account in accounts.items() if account is not None}
        assert len(ids) == len(needed)
        postings = [
            PostingDraft(
                payer.id,
                ids[payer.currency, AccountType.LIQUIDITY],
                conversion.source_used,
                payer.currency,
            )
        ]
        if conversion.fee:
            fee_to = fee_account or ids[payer.currency, AccountType.FEES]
            postings.append(PostingDraft(payer.id, fee_to, conversion.fee, payer.currency))
        if conversion.residue:
            rounding = ids[payer.currency, AccountType.ROUNDING]
            postings.append(PostingDraft(payer.id, rounding, conversion.residue, payer.currency))
        postings.append(
            PostingDraft(
                ids[payee.currency, AccountType.LIQUIDITY],
                payee.id,
                conversion.target_amount,
                payee.currency,
            )
        )
        draft = TransactionDraft(
            postings=tuple(postings),
            client_id=client_id,
            memo=memo,
            category=category,
            metadata={
                **(metadata or {}),
                "conversion": {
                    "rate": rates.format_rate(priced.rate),
                    "protocol_version": priced.version.version,
                    "quote_id": quote_id,
                    "request_hash": request,
                },
            },
        )
        return self.ledger.post_transaction(
            draft, scope=scope, hook=hook, actor=actor.running(authority.EXCHANGE)
        )

    def _replay(
        self,
        client_id: str,
        scope: str,
        request: tuple[int, int, str | None, int | None, int | None, str | None, str | None],
        request_hash: str,
    ) -> Outcome | None:
        """A retry answers with the conversion its client id first made, even when the rate
        has moved since: the ledger's own replay compares the priced postings, which a new
        rate would change, so the request is compared here instead. None: a first request."""

        def work(connection: Connection) -> tuple[int, RowMapping | None] | None:
            found = ledger_repository.transactions_by_client_id(connection, scope, [client_id])
            if not found:
                return None
            transaction_id = int(found[0]["id"])
            return transaction_id, repo.conversion_by_transaction(connection, transaction_id)

        stored = self._read(work)
        if stored is None:
            return None
        transaction_id, conversion = stored
        transaction = self.ledger.get_transaction(transaction_id)
        payer_id, payee_id, quote_id, source_amount, target_amount, memo, category = request
        stored_hash = (transaction.metadata.get("conversion") or {}).get("request_hash")
        same = conversion is not None and (
            stored_hash == request_hash
            if stored_hash is not None
            # A conversion stored before requests were hashed: its recorded fields.
            else (conversion["payer_account_id"], conversion["payee_account_id"])
            == (payer_id, payee_id)
            and conversion["quote_id"] == quote_id
            and source_amount in (None, conversion["source_amount"])
            and target_amount in (None, conversion["target_amount"])
            and (transaction.memo, transaction.category) == (memo, category)
        )
        if not same:
            raise LedgerError(
                Code.IDEMPOTENCY_CONFLICT,
                f"This client_id already made conversion {transaction_id}, from other content; "
                "repeat every field of that request to replay it, or send a new client_id.",
                field="client_id",
                extra={"transaction_id": transaction_id},
            )
        return Outcome(transaction, None, replayed=True)

    def conversion_of(self, transaction_id: int) -> RowMapping | None:
        return self._read(
            lambda connection: repo.conversion_by_transaction(connection, transaction_id)
        )

    # -- pricing --------------------------------------------------------------------------------

    def _price(
        self,
        payer: Account,
        to_currency: str,
        source_amount: int | None,
        target_amount: int | None,
        at: dt.datetime,
    ) -> Priced:
        if (source_amount is None) == (target_amount is None):
            raise LedgerError(
                Code.INVALID_REQUEST,
                "Give exactly one of source_amount (what the payer pays) or target_amount (what "
                "the payee receives).",
                field="source_amount",
            )
        version = self.protocol_in_force(payer.currency, to_currency, at)
        if version is None:
            raise self._not_in_force(payer.currency, to_currency, at)
        if not version.spec.allowed:
            # Before the rate: a forbidden pair needs no valuations to be refused.
            raise LedgerError(
                Code.CONVERSION_FORBIDDEN,
                f"The federation forbids converting {payer.currency} to {to_currency}; no "
                "account may, at any time.",
                field="to_currency",
            )
        rate, valuation_from, valuation_to = self._rate(version, at)
        fee_bps = version.spec.fee_bps
        try:
            if source_amount is not None:
                conversion = rates.convert_source(source_amount, rate, fee_bps)
            else:
                assert target_amount is not None
                conversion = rates.convert_target(target_amount, rate, fee_bps)
        except rates.ConversionTooSmallError as error:
            raise LedgerError(
                Code.CONVERSION_TOO_SMALL,
                f"{source_amount or target_amount} minor units deliver nothing after the fee "
                f"({fee_bps} bps) and rounding; convert a larger amount.",
                field="source_amount",
            ) from error
        except rates.AmountOutOfRangeError as error:
            raise LedgerError(
                Code.AMOUNT_OUT_OF_RANGE,
                "At this rate one side of the conversion would be more than "
                "9,007,199,254,740,991 minor units; convert a smaller amount.",
                field="source_amount",
            ) from error
        return Priced(version, rate, conversion, valuation_from, valuation_to)

    def _not_in_force(self, from_currency: str, to_currency: str, at: dt.datetime) -> LedgerError:
        """No version of the pair is in force at ``at``: either none will be, or one is
        scheduled to take effect later."""
        source = self.ledger.get_currency(from_currency)
        target = self.ledger.get_currency(to_currency)
        scheduled = self._read(
            lambda connection: repo.protocol_scheduled(connection, source.id, target.id, at)
        )
        if scheduled is None:
            return LedgerError(
                Code.CONVERSION_NOT_ALLOWED,
                f"{from_currency} does not convert to {to_currency}: the federation has set no "
                "protocol for the pair (GET /v1/protocols lists those there are).",
                field="to_currency",
            )
        return LedgerError(
            Code.PROTOCOL_NOT_IN_FORCE,
            f"The protocol for {from_currency} -> {to_currency} takes effect at "
            f"{scheduled['effective_from']:%Y-%m-%d %H:%M:%S} UTC.",
            extra={"effective_from": scheduled["effective_from"].isoformat()},
        )

    def _rate(
        self, version: ProtocolVersion, at: dt.datetime, connection: Connection | None = None
    ) -> tuple[Fraction, Fraction | None, Fraction | None]:
        """The minor rate of a version at an instant, and the valuations it came from; read
        on ``connection`` when given (inside the conversion's unit of work)."""
        source = self.ledger.get_currency(version.spec.from_currency)
        target = self.ledger.get_currency(version.spec.to_currency)
        if version.spec.fixed_rate is not None:
            return (
                rates.minor_rate_from_major(version.spec.fixed_rate, source.scale, target.scale),
                None,
                None,
            )

        def valuations(on: Connection) -> tuple[Fraction, Fraction]:
            found = []
            for held in (source, target):
                row = repo.valuation_at(on, held.id, at)
                if row is None:
                    raise LedgerError(
                        Code.VALUATION_MISSING, f"{held.code} has no valuation.", field="currency"
                    )
                found.append(Fraction(row["rate_numerator"], row["rate_denominator"]))
            return found[0], found[1]

        valuation_from, valuation_to = (
            self._read(valuations) if connection is None else valuations(connection)
        )
        rate = rates.minor_rate(valuation_from, source.scale, valuation_to, target.scale)
        return rate, valuation_from, valuation_to

    def _priced_quote(self, row: RowMapping, payer: Account, payee: Account) -> Priced:
        from_id = self.ledger.get_currency(payer.currency).id
        to_id = self.ledger.get_currency(payee.currency).id
        if (row["payer_account_id"], row["from_currency_id"], row["to_currency_id"]) != (
            payer.id,
            from_id,
            to_id,
        ):
            raise LedgerError(
                Code.QUOTE_MISMATCH,
                f"Quote {row['id']} was made for payer account {row['payer_account_id']} and "
                "other currencies or payer than this conversion's; send the payer and a payee "
                "of the currencies quoted, or ask for a new quote.",
                field="quote_id",
            )
        version_row = self._read(
            lambda connection: repo.protocol_version_by_id(connection, row["protocol_version_id"])
        )
        assert version_row is not None
        version = self._read(lambda connection: protocol_version_from_row(connection, version_row))
        conversion = rates.Conversion(
            source_amount=row["source_amount"],
            fee=row["fee"],
            source_used=row["source_used"],
            residue=row["residue"],
            target_amount=row["target_amount"],
            rate=rates.read_stored_rate(row["rate"]),
            fee_bps=version.spec.fee_bps,
        )
        # The valuations the quote was priced with: those in force when it was made (a
        # valuation recorded later never changes what was in force then).
        _, valuation_from, valuation_to = self._rate(version, row["created_at"])
        return Priced(version, conversion.rate, conversion, valuation_from, valuation_to)

    @overload
    def _federation_account(self, settings: Settings, currency: str, kind: AccountType) -> int: ...

    @overload
    def _federation_account(
        self, settings: Settings, currency: str, kind: AccountType, *, open_missing: bool
    ) -> int | None: ...

    def _federation_account(
        self, settings: Settings, currency: str, kind: AccountType, *, open_missing: bool = True
    ) -> int | None:
        """The federation's liquidity, fee or rounding account for a currency, opened on
        first use (no floor: the federation's own position may go either way); None when
        it is not open yet and ``open_missing`` is false."""
        name = FEDERATION_ACCOUNTS[kind]
        key = (settings.federation_community, currency, kind)
        if key in self._federation_ids:
            return self._federation_ids[key]
        page = self.ledger.list_accounts(
            community=settings.federation_community, currency=currency, type=kind
        )
        for account in page.items:
            if account.name == name:
                self._federation_ids[key] = account.id  # an account is never deleted
                return account.id
        if not open_missing:
            return None
        try:
            opened = self.ledger.open_account(
                community=settings.federation_community,
                currency=currency,
                type=kind,
                name=name,
                min_balance=None,
            )
        except LedgerError as error:
            if error.code != Code.ACCOUNT_NAME_TAKEN:
                raise
            return self._federation_account(settings, currency, kind)  # a concurrent first use won
        return opened.id


def _check_protocol_admits(spec: ProtocolSpec, payer: Account, now: dt.datetime) -> None:
    """The protocol's own rules for this payer at this instant (limits aside)."""
    pair = f"{spec.from_currency} to {spec.to_currency}"
    if not spec.allowed:
        raise LedgerError(
            Code.CONVERSION_FORBIDDEN, f"The federation forbids converting {pair}, for any account."
        )
    if spec.suspended:
        raise LedgerError(
            Code.PROTOCOL_SUSPENDED,
            f"The protocol for {pair} is suspended; retry once the federation lifts it.",
        )
    if (spec.effective_from is not None and now < spec.effective_from) or (
        spec.effective_until is not None and now >= spec.effective_until
    ):
        start, end = spec.effective_from, spec.effective_until
        raise LedgerError(
            Code.PROTOCOL_NOT_IN_FORCE,
            f"The protocol for {pair} is in force from {_when(start)} until {_when(end)}; "
            "convert within that time.",
        )
    types, ids = spec.eligible_account_types, spec.eligible_account_ids
    if (types is not None and payer.type not in types) or (ids is not None and payer.id not in ids):
        raise LedgerError(
            Code.ACCOUNT_NOT_ELIGIBLE,
            f"Account {payer.id} (type {payer.type.value}) may not convert: the protocol "
            f"converts {pair} only from {_who_may_convert(spec)}.",
            account_id=payer.id,
            extra={
                "eligible_account_types": None if types is None else [t.value for t in types],
                "eligible_account_ids": None if ids is None else list(ids),
            },
        )
    if spec.windows is not None and not any(window.is_open(now) for window in spec.windows):
        raise _window_closed(spec, pair, now)


def _when(instant: dt.datetime | None) -> str:
    return "open-ended" if instant is None else instant.isoformat()


def _no_protocol(from_currency: str, to_currency: str) -> LedgerError:
    return LedgerError(
        Code.PROTOCOL_NOT_FOUND,
        f"No protocol for {from_currency} to {to_currency} is in force; GET /v1/protocols "
        "lists the pairs that have one.",
    )


def _no_version_proposed(version_id: int) -> LedgerError:
    return LedgerError(
        Code.PROPOSAL_NOT_FOUND,
        f"Protocol version {version_id} is not waiting for approval (none such, or already "
        "decided); GET /v1/governance/proposals lists what waits.",
        field="version_id",
    )


def _who_may_convert(spec: ProtocolSpec) -> str:
    """``provider or issuance accounts``, ``accounts 12, 14``, or both joined by "among"."""
    kinds = spec.eligible_account_types
    ids = spec.eligible_account_ids
    by_kind = None if kinds is None else " or ".join(kind.value for kind in kinds) + " accounts"
    by_id = None if ids is None else "accounts " + ", ".join(map(str, sorted(ids)))
    if by_kind is not None and by_id is not None:
        return f"{by_kind} among {by_id}"
    return by_kind or by_id or "no account"


def _window_closed(spec: ProtocolSpec, pair: str, now: dt.datetime) -> LedgerError:
    windows = spec.windows or ()
    opens = next_opening(windows, now)
    if opens is not None and spec.effective_until is not None and opens >= spec.effective_until:
        opens = None  # the protocol ends first
    shown = "; or ".join(window.describe() for window in windows) or "none"
    when = (
        "none of its windows opens again while this protocol is in force"
        if opens is None
        else f"it opens again at {opens.isoformat()} ({opens:%Y-%m-%d %H:%M} UTC)"
    )
    return LedgerError(
        Code.WINDOW_CLOSED,
        f"The protocol converts {pair} only in its windows (UTC: {shown}); it is closed at "
        f"{now.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC, and {when}.",
        extra={"opens_at": None if opens is None else opens.isoformat()},
    )


class _ConversionHook:
    """The exchange rules, checked inside the unit of work that posts the conversion."""

    def __init__(
        self,
        exchange: Exchange,
        payer: Account,
        payee: Account,
        priced: Priced,
        quote_id: str | None,
    ):
        self.exchange = exchange
        self.payer = payer
        self.payee = payee
        self.priced = priced
        self.quote_id = quote_id
        self.from_id = exchange.ledger.get_currency(payer.currency).id
        self.to_id = exchange.ledger.get_currency(payee.currency).id
        self.payer_community_id = exchange.ledger.get_community(payer.community).id
        self.at: dt.datetime | None = None

    def check(self, connection: Connection, now: dt.datetime) -> None:
        self.at = now
        if self.quote_id is not None:
            quote = repo.quote_by_id(connection, self.quote_id, lock=True)
            assert quote is not None
            if quote["transaction_id"] is not None:
                raise LedgerError(
                    Code.QUOTE_USED,
                    f"Quote {self.quote_id} already paid transaction {quote['transaction_id']}; "
                    "ask for a new quote for another conversion.",
                    field="quote_id",
                )
            if quote["expires_at"] <= now:
                raise LedgerError(
                    Code.QUOTE_EXPIRED,
                    f"Quote {self.quote_id} expired at {quote['expires_at'].isoformat()}; ask for "
                    "a new one (POST /v1/quotes) and convert with it before it expires.",
                    field="quote_id",
                )
        row = repo.protocol_in_force(connection, self.from_id, self.to_id, now)
        if row is None:
            raise LedgerError(
                Code.CONVERSION_NOT_ALLOWED,
                f"{self.payer.currency} no longer converts to {self.payee.currency}: no protocol "
                "for the pair is in force now.",
            )
        if row["id"] != self.priced.version.id:
            raise LedgerError(
                Code.PROTOCOL_CHANGED,
                f"The protocol is at version {row['version']}, not the "
                f"{self.priced.version.version} priced; ask for a new quote, or send again.",
                extra={"version": row["version"]},
            )
        spec = self.priced.version.spec
        _check_protocol_admits(spec, self.payer, now)
        if self.quote_id is None and spec.fixed_rate is None:
            current_rate, _, _ = self.exchange._rate(self.priced.version, now, connection)
            if current_rate != self.priced.rate:
                raise LedgerError(
                    Code.PROTOCOL_CHANGED, "A valuation changed while pricing; retry."
                )
        self._check_limits(connection, spec, now)

    def _check_limits(self, connection: Connection, spec: ProtocolSpec, now: dt.datetime) -> None:
        day = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        amount = self.priced.conversion.source_amount
        for name in LIMIT_NAMES:
            limit = spec.limits.get(name)
            if limit is None:
                continue
            by_account = name.startswith("account")
            used = repo.converted_since(
                connection,
                self.from_id,
                self.to_id,
                account_id=self.payer.id if by_account else None,
                community_id=None if by_account else self.payer_community_id,
                since=day if name.endswith("daily") else month,
            )
            if used + amount > limit:
                raise LedgerError(
                    Code.CONVERSION_LIMIT_EXCEEDED,
                    f"The {name.replace('_', ' ')} limit is {limit}; {used} is used, so at most "
                    f"{max(limit - used, 0)} more can be converted.",
                    account_id=self.payer.id,
                    extra={
                        "limit": name,
                        "limit_amount": limit,
                        "used": used,
                        "headroom": max(limit - used, 0),
                    },
                )

    def record(self, connection: Connection, transaction: Transaction) -> None:
        conversion = self.priced.conversion
        repo.insert_conversion(
            connection,
            {
                "transaction_id": transaction.id,
                "protocol_version_id": self.priced.version.id,
                "quote_id": self.quote_id,
                "payer_account_id": self.payer.id,
                "payer_community_id": self.payer_community_id,
                "payee_account_id": self.payee.id,
                "from_currency_id": self.from_id,
                "to_currency_id": self.to_id,
                "source_amount": conversion.source_amount,
                "fee": conversion.fee,
                "source_used": conversion.source_used,
                "residue": conversion.residue,
                "target_amount": conversion.target_amount,
                "rate": rates.format_rate(self.priced.rate),
                "valuation_from": None
                if self.priced.valuation_from is None
                else rates.format_rate(self.priced.valuation_from),
                "valuation_to": None
                if self.priced.valuation_to is None
                else rates.format_rate(self.priced.valuation_to),
                "at": transaction.created_at,
            },
        )
        if self.quote_id is not None:
            repo.mark_quote_used(connection, self.quote_id, transaction.id)


# -- the governed policies (exchange.governance runs them inside its unit of work) ----------------


def _signatory(by: str | Signatory) -> Signatory:
    """A bare name is a federation key's (the Python API's callers: the API passes the
    key's role and community, the CLI the operator)."""
    return by if isinstance(by, Signatory) else Signatory(by, governance.FEDERATION)


class _SettingsPolicy:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def check(self, connection: Connection, change: dict[str, Any], now: dt.datetime) -> None:
        self._values(connection, change, now)

    def apply(self, connection: Connection, proposal: Proposal, now: dt.datetime) -> Settings:
        repo.save_settings(connection, self._values(connection, proposal.change, now))
        return _settings(connection)

    def noted(self, connection: Connection, proposal: Proposal) -> None:
        pass

    def _values(
        self, connection: Connection, change: dict[str, Any], now: dt.datetime
    ) -> dict[str, Any]:
        unit = ledger_repository.currency_by_code(connection, change["reference_unit"])
        if unit is None or unit["kind"] != CurrencyKind.UNIT:
            raise LedgerError(
                Code.INVALID_REQUEST,
                "The reference unit must be a currency of kind 'unit'.",
                field="reference_unit",
            )
        owner = ledger_repository.community_by_slug(connection, change["federation_community"])
        if owner is None:
            raise community_not_found(change["federation_community"], "federation_community")
        current = repo.settings(connection)
        if (
            current is not None
            and current["reference_currency_id"] != unit["id"]
            and repo.any_flow_recorded(connection)
        ):
            # Reciprocity flows are valued in the unit; a new unit would mix two scales.
            raise LedgerError(
                Code.INVALID_REQUEST,
                "The reference unit cannot change once flows between communities are "
                "recorded in it.",
                field="reference_unit",
            )
        return {
            "reference_currency_id": unit["id"],
            "federation_community_id": owner["id"],
            "approvals_required": change["approvals_required"],
            "approvers": change["approvers"],
            "quote_seconds": change["quote_seconds"],
            "proposal_seconds": change["proposal_seconds"],
            "updated_at": now,
        }


class _ValuationPolicy:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def check(self, connection: Connection, change: dict[str, Any], now: dt.datetime) -> None:
        self._prepared(connection, change, now)

    def apply(self, connection: Connection, proposal: Proposal, now: dt.datetime) -> Valuation:
        currency_id, rate, start = self._prepared(connection, proposal.change, now)
        repo.insert_valuation(
            connection,
            {
                "currency_id": currency_id,
                "rate_numerator": rate.numerator,
                "rate_denominator": rate.denominator,
                "effective_from": start,
                "recorded_at": now,
                "recorded_by": proposal.proposed_by,
                "reason": proposal.reason,
                "proposal_id": proposal.id,
            },
        )
        _check_no_arbitrage(connection, now)
        record_events(connection, now, [(EventKind.VALUATION_CHANGED, None, None, ())])
        return Valuation(
            proposal.change["currency"],
            rate,
            start,
            now,
            proposal.proposed_by,
            proposal.reason,
            proposal.id,
        )

    def noted(self, connection: Connection, proposal: Proposal) -> None:
        pass

    def _prepared(
        self, connection: Connection, change: dict[str, Any], now: dt.datetime
    ) -> tuple[int, Fraction, dt.datetime]:
        code = change["currency"]
        rate = rates.read_stored_rate(change["rate"])
        given = change["effective_from"]
        start = now if given is None else dt.datetime.fromisoformat(given)
        current = _settings(connection)
        if code == current.reference_unit and rate != 1:
            raise LedgerError(
                Code.RATE_INVALID, "The reference unit is worth exactly 1.", field="rate"
            )
        held = ledger_repository.currency_by_code(connection, code)
        if held is None:
            raise currency_not_found(code)
        in_force = repo.valuation_at(connection, held["id"], now)
        if in_force is not None and start < in_force["effective_from"]:
            since = in_force["effective_from"]
            raise LedgerError(
                Code.VALUATION_BACKDATED,
                f"{code} has a valuation in force from {since:%Y-%m-%d %H:%M:%S} UTC; a new "
                f"one takes effect at or after that ({since.isoformat()}), or from now if "
                "effective_from is left out.",
                field="effective_from",
                extra={"in_force_from": since.isoformat()},
            )
        return int(held["id"]), rate, start


class _ProtocolPolicy:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def check(self, connection: Connection, change: dict[str, Any], now: dt.datetime) -> None:
        pass  # the version was checked, and written as proposed, before it was submitted

    def apply(
        self, connection: Connection, proposal: Proposal, now: dt.datetime
    ) -> ProtocolVersion:
        version_id = int(proposal.change["protocol_version_id"])
        row = repo.protocol_version_by_id(connection, version_id, lock=True)
        if row is None or row["state"] != "proposed":
            raise _no_version_proposed(version_id)
        repo.update_protocol_version(
            connection,
            version_id,
            {
                "state": "active",
                "activated_at": now,
                "approvals": [a.key for a in proposal.approvals],
            },
        )
        _check_no_arbitrage(connection, now)
        record_events(connection, now, [(EventKind.PROTOCOL_CHANGED, None, None, ())])
        updated = repo.protocol_version_by_id(connection, version_id)
        assert updated is not None
        return protocol_version_from_row(connection, updated, now)

    def noted(self, connection: Connection, proposal: Proposal) -> None:
        """Keep the version's copy of its approvals, and its state once the proposal ended
        without applying (rejected, expired)."""
        version_id = int(proposal.change["protocol_version_id"])
        values: dict[str, Any] = {
            "approvals": [a.key for a in proposal.approvals if a.withdrawn_at is None]
        }
        row = repo.protocol_version_by_id(connection, version_id)
        if (
            row is not None
            and row["state"] == "proposed"
            and proposal.state
            in (
                governance.State.REJECTED,
                governance.State.EXPIRED,
            )
        ):
            values["state"] = proposal.state
        repo.update_protocol_version(connection, version_id, values)


class _CreditLinePolicy:
    """A community credit line, set by ``Reciprocity.set_credit_line`` (which its owner
    keeps) running on the governed unit of work's connection."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def check(self, connection: Connection, change: dict[str, Any], now: dt.datetime) -> None:
        limit = change["credit_limit"]
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= BALANCE_MAX
        ):
            raise LedgerError(
                Code.INVALID_REQUEST,
                "A credit limit is a whole number of minor units, 0 or more.",
                field="credit_limit",
            )
        if ledger_repository.community_by_slug(connection, change["community"]) is None:
            raise community_not_found(change["community"])
        _settings(connection)  # credit lines are in the reference unit

    def apply(self, connection: Connection, proposal: Proposal, now: dt.datetime) -> CreditLine:
        change = proposal.change
        return _reciprocity_on(self.exchange.ledger, connection).set_credit_line(
            change["community"], change["credit_limit"], by=proposal.proposed_by
        )

    def noted(self, connection: Connection, proposal: Proposal) -> None:
        pass


def _reciprocity_on(ledger: Ledger, connection: Connection) -> Reciprocity:
    """``Reciprocity`` whose writes run on ``connection``: inside the unit of work that
    approves the change, not in one of their own."""
    from exchange.reciprocity import Reciprocity  # noqa: PLC0415 - it imports this module

    class OnConnection(Reciprocity):
        def _write(self, work: Callable[[Connection], T]) -> T:
            return work(connection)

    return OnConnection(ledger)


def _settings_from_row(row: RowMapping) -> Settings:
    return Settings(
        row["reference_unit"],
        row["federation_community"],
        row["approvals_required"],
        row["quote_seconds"],
        row["approvers"],
        row["proposal_seconds"],
    )


def _settings_change(settings: Settings) -> dict[str, Any]:
    return {
        "reference_unit": settings.reference_unit,
        "federation_community": settings.federation_community,
        "approvals_required": settings.approvals_required,
        "approvers": settings.approvers,
        "quote_seconds": settings.quote_seconds,
        "proposal_seconds": settings.proposal_seconds,
    }


def _check_settings(settings: Settings) -> None:
    if (
        not 0 <= settings.approvals_required <= 10
        or not 5 <= settings.quote_seconds <= 3600
        or not governance.PROPOSAL_SECONDS_MIN
        <= settings.proposal_seconds
        <= governance.PROPOSAL_SECONDS_MAX
    ):
        raise LedgerError(
            Code.INVALID_REQUEST,
            "approvals_required is 0 to 10, quote_seconds 5 to 3,600 and proposal_seconds "
            "3,600 to 7,776,000 (90 days).",
            field="approvals_required",
        )
    if settings.approvers not in tuple(governance.Approvers):
        raise LedgerError(
            Code.INVALID_REQUEST,
            "approvers is 'federation' (federation keys) or 'communities' (one seat per "
            "member community, and one for the federation).",
            field="approvers",
        )


# -- helpers ---------------------------------------------------------------------------------


def _settings(connection: Connection, *, lock: bool = False) -> Settings:
    """The federation's settings. Every change to valuations or protocols locks them first,
    so such changes run one after another even on PostgreSQL's READ COMMITTED: two changes
    that are each free of arbitrage but together close a gaining circle cannot both pass
    ``_check_no_arbitrage``, and two versions of a pair cannot take the same number."""
    row = repo.settings(connection, lock=lock)
    if row is None:
        raise LedgerError(
            Code.EXCHANGE_NOT_CONFIGURED,
            "The federation has not set its reference unit and own community yet; it does "
            "so with PUT /v1/exchange/settings before anything converts.",
        )
    return _settings_from_row(row)


def _valuation(currency: str, row: RowMapping) -> Valuation:
    return Valuation(
        currency,
        Fraction(row["rate_numerator"], row["rate_denominator"]),
        row["effective_from"],
        row["recorded_at"],
        row["recorded_by"],
        row["reason"],
        row["proposal_id"],
    )


def _check_slippage(
    priced: Priced, max_slippage_bps: int | None, expected_rate: Fraction | None
) -> None:
    """The all-in price (fees and rounding included) against the rate the client expected
    (the protocol's rate in force when it names none), within ``max_slippage_bps``; with
    an expected rate and no slippage stated, the rate in force may not be worse."""
    if max_slippage_bps is not None and not 0 <= max_slippage_bps <= BPS:
        raise LedgerError(
            Code.INVALID_REQUEST,
            f"max_slippage_bps is {max_slippage_bps}; give 0 to 10,000 basis points.",
            field="max_slippage_bps",
        )
    reference = priced.rate if expected_rate is None else expected_rate
    if max_slippage_bps is None:
        if priced.rate < reference:
            raise LedgerError(
                Code.SLIPPAGE_EXCEEDED,
                f"The rate in force is {rates.format_rate(priced.rate)}, worse than the "
                f"{rates.format_rate(reference)} you expected; price again, or allow "
                "max_slippage_bps.",
                extra={"rate": rates.format_rate(priced.rate)},
            )
        return
    conversion = priced.conversion
    fair = conversion.source_amount * reference
    shortfall_bps = (fair - conversion.target_amount) * BPS / fair
    if shortfall_bps > max_slippage_bps:
        raise LedgerError(
            Code.SLIPPAGE_EXCEEDED,
            f"The payment would arrive {math.ceil(shortfall_bps)} basis points below the "
            f"rate of {rates.format_rate(reference)}, more than the {max_slippage_bps} "
            "you allowed.",
            extra={
                "slippage_bps": math.ceil(shortfall_bps),
                "rate": rates.format_rate(priced.rate),
            },
        )


def _conversion_request_hash(*fields: Any) -> str:
    """Every field of a conversion request, canonically: a retry must repeat them all."""
    text = json.dumps(
        [str(f) if isinstance(f, Fraction) else f for f in fields],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _check_spec(spec: ProtocolSpec) -> None:
    if (
        isinstance(spec.fee_bps, bool)
        or not isinstance(spec.fee_bps, int)
        or not 0 <= spec.fee_bps < BPS
    ):
        raise LedgerError(
            Code.INVALID_REQUEST,
            f"fee_bps is {spec.fee_bps!r}; give 0 to 9,999 basis points.",
            field="fee_bps",
        )
    if spec.fixed_rate is not None and spec.fixed_rate <= 0:
        raise LedgerError(
            Code.RATE_INVALID,
            f"rate {spec.fixed_rate} is not positive; give one such as 22 or 9/200, or none "
            "to derive it from valuations.",
            field="rate",
        )
    for name, value in spec.limits.items():
        if (
            name not in LIMIT_NAMES
            or isinstance(value, bool)
            or not isinstance(value, int)
            or value < 0
        ):
            raise LedgerError(
                Code.INVALID_REQUEST,
                f"Limits are {', '.join(LIMIT_NAMES)}: whole source units.",
                field="limits",
            )
    if spec.effective_from and spec.effective_until and spec.effective_until <= spec.effective_from:
        raise LedgerError(
            Code.INVALID_REQUEST,
            f"effective_until {spec.effective_until.isoformat()} must come after effective_from "
            f"{spec.effective_from.isoformat()}.",
            field="effective_until",
        )
    for window in spec.windows or ():
        ranges = (
            (window.months, 1, 12),
            (window.days, 1, 31),
            (window.weekdays, 0, 6),
            (window.hours, 0, 23),
        )
        if any(not all(low <= value <= high for value in values) for values, low, high in ranges):
            raise LedgerError(
                Code.INVALID_REQUEST,
                "Windows list months 1-12, days 1-31, weekdays 0-6 (Monday is 0) and hours 0-23.",
                field="windows",
            )


def _spec_values(spec: ProtocolSpec, from_id: int, to_id: int) -> dict[str, Any]:
    return {
        "from_currency_id": from_id,
        "to_currency_id": to_id,
        "allowed": spec.allowed,
        "suspended": spec.suspended,
        "fixed_rate_numerator": None if spec.fixed_rate is None else spec.fixed_rate.numerator,
        "fixed_rate_denominator": None if spec.fixed_rate is None else spec.fixed_rate.denominator,
        "fee_bps": spec.fee_bps,
        "fee_account_id": spec.fee_account_id,
        "eligible_account_types": None
        if spec.eligible_account_types is None
        else [str(t) for t in spec.eligible_account_types],
        "eligible_account_ids": None
        if spec.eligible_account_ids is None
        else list(spec.eligible_account_ids),
        "windows": None
        if spec.windows is None
        else [
            {
                "months": list(w.months),
                "days": list(w.days),
                "weekdays": list(w.weekdays),
                "hours": list(w.hours),
            }
            for w in spec.windows
        ],
        "limits": dict(spec.limits),
        "effective_from": spec.effective_from,
        "effective_until": spec.effective_until,
    }


def _currency_codes(connection: Connection) -> dict[int, str]:
    return {row["id"]: row["code"] for row in ledger_repository.list_currencies(connection)}


def protocol_version_from_row(
    connection: Connection, row: RowMapping, now: dt.datetime | None = None
) -> ProtocolVersion:
    """A version as stored; given ``now``, a proposed one whose proposal has expired by
    then reads as expired (the next governed write records it so)."""
    codes = _currency_codes(connection)
    state = row["state"]
    if state == "proposed" and now is not None and row["proposal_id"] is not None:
        proposal = governance.proposal_row(connection, row["proposal_id"])
        if proposal is not None and proposal["state"] == "pending":
            state = "expired" if proposal["expires_at"] <= now else state
        elif proposal is not None and proposal["state"] in ("rejected", "expired"):
            state = proposal["state"]
    fixed = (
        None
        if row["fixed_rate_numerator"] is None
        else Fraction(row["fixed_rate_numerator"], row["fixed_rate_denominator"])
    )
    spec = ProtocolSpec(
        from_currency=codes[row["from_currency_id"]],
        to_currency=codes[row["to_currency_id"]],
        allowed=row["allowed"],
        fixed_rate=fixed,
        fee_bps=row["fee_bps"],
        fee_account_id=row["fee_account_id"],
        eligible_account_types=None
        if row["eligible_account_types"] is None
        else tuple(AccountType(t) for t in row["eligible_account_types"]),
        eligible_account_ids=None
        if row["eligible_account_ids"] is None
        else tuple(row["eligible_account_ids"]),
        windows=None
        if row["windows"] is None
        else tuple(
            Window(tuple(w["months"]), tuple(w["days"]), tuple(w["weekdays"]), tuple(w["hours"]))
            for w in row["windows"]
        ),
        limits=dict(row["limits"]),
        effective_from=row["effective_from"],
        effective_until=row["effective_until"],
        suspended=row["suspended"],
    )
    return ProtocolVersion(
        id=row["id"],
        version=row["version"],
        state=state,
        spec=spec,
        proposed_at=row["proposed_at"],
        proposed_by=row["proposed_by"],
        reason=row["reason"],
        approvals=tuple(row["approvals"]),
        activated_at=row["activated_at"],
        proposal_id=row["proposal_id"],
    )


def _check_no_arbitrage(connection: Connection, now: dt.datetime) -> None:
    """Refuse a change after which converting round a circle of currencies at the
    protocols' rates (before fees) would multiply value, now or at any later instant at
    which a scheduled valuation or protocol version takes effect."""
    codes = _currency_codes(connection)
    for at in (now, *repo.changes_after(connection, now)):
        _check_no_arbitrage_at(connection, codes, at, later=at != now)


def _check_no_arbitrage_at(
    connection: Connection, codes: dict[int, str], at: dt.datetime, *, later: bool
) -> None:
    edges: dict[tuple[str, str], Fraction] = {}
    for from_id, to_id in repo.protocol_pairs(connection):
        row = repo.protocol_in_force(connection, from_id, to_id, at)
        if row is None or not row["allowed"] or row["suspended"]:
            continue
        if row["effective_until"] is not None and row["effective_until"] <= at:
            continue  # ended: no conversion follows this edge any more
        if row["fixed_rate_numerator"] is not None:
            edges[codes[from_id], codes[to_id]] = Fraction(
                row["fixed_rate_numerator"], row["fixed_rate_denominator"]
            )
            continue
        valuation_from = repo.valuation_at(connection, from_id, at)
        valuation_to = repo.valuation_at(connection, to_id, at)
        if valuation_from is None or valuation_to is None:
            continue
        edges[codes[from_id], codes[to_id]] = Fraction(
            valuation_from["rate_numerator"], valuation_from["rate_denominator"]
        ) / Fraction(valuation_to["rate_numerator"], valuation_to["rate_denominator"])
    found = rates.find_gain_cycle(edges)
    if found is not None:
        gain, cycle = found
        when = f" from {at:%Y-%m-%d %H:%M:%S} UTC" if later else ""
        raise LedgerError(
            Code.ARBITRAGE_CYCLE,
            f"Converting round {' -> '.join(cycle)} would multiply value "
            f"by {rates.format_rate(gain)}{when}.",
            extra={"cycle": cycle, "gain": rates.format_rate(gain), "at": at.isoformat()},
        )
