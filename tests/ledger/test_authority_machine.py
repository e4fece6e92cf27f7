"""Actors holding random keys try random operations; authority holds after every step.

A hypothesis state machine over the ledger's service on both databases. The actors are
the federation, Riverbend's and Hilltop's treasurers and two members; the operations are
opening accounts of every type, in every currency, with every kind of floor; changing
floors, ceilings and status; paying between any two accounts (system accounts included);
and changing a currency's policy. After every step:

- what an independent model of the rules says may happen is exactly what happened: an
  operation the model forbids was refused and wrote nothing, one it allows succeeded or
  was refused for a reason that is not authority (funds, limits, currency);
- ``verify`` finds nothing: balances sum to zero per currency, every issuance account
  and floor below zero was given by its currency's issuer, no cap is passed;
- no system account moved (no operation of the exchange or reciprocity runs here).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from ledger.authority import Actor, ActorRole, HeldIn
from ledger.errors import LedgerError
from ledger.model import AccountStatus, AccountType, CurrencyKind
from ledger.service import Ledger
from ledger.verify import verify
from tests.ledger.builders import pay

AUTHORITY = {
    "account_not_found",
    "currency_not_held",
    "issuance_not_authorized",
    "system_account",
    "forbidden",
}
COMMUNITIES = ("riverbend", "hilltop")
# code -> (issuer community or None for the federation, where it is held)
CURRENCIES = {"HRB": ("riverbend", HeldIn.ISSUER), "LVS": (None, HeldIn.ALL)}
WIPED = ("entries", "holds", "postings", "events", "transactions", "accounts", "currencies")
ACTORS = ("federation", "riverbend", "hilltop", "member-ana", "member-cai")


class AuthorityMachine(RuleBasedStateMachine):
    engine: Engine

    @initialize()
    def found(self) -> None:
        with self.engine.begin() as connection:  # each example starts from empty books
            for table in WIPED:
                connection.execute(text(f"DELETE FROM {table}"))
        self.ledger = Ledger(self.engine)
        ledger = self.ledger
        with self.engine.begin() as connection:
            connection.execute(text("DELETE FROM communities"))
        self.community_ids = {slug: ledger.create_community(slug, slug).id for slug in COMMUNITIES}
        ledger.create_currency(
            "HRB", kind=CurrencyKind.HEARTS, scale=2, name="H", symbol="♡", issuer="riverbend"
        )
        ledger.create_currency("LVS", kind=CurrencyKind.LEAVES, scale=0, name="L", symbol="🍃")
        # (id, community, currency, type)
        self.accounts: list[tuple[int, str, str, AccountType]] = []

        def open_(community: str, currency: str, kind: AccountType, name: str) -> int:
            account = ledger.open_account(
                community=community, currency=currency, type=kind, name=name
            )
            self.accounts.append((account.id, community, currency, kind))
            return account.id

        issuance = open_("riverbend", "HRB", AccountType.ISSUANCE, "issuance")
        leaves = open_("riverbend", "LVS", AccountType.ISSUANCE, "leaves")
        self.ana = open_("riverbend", "HRB", AccountType.MEMBER, "ana")
        ana_leaves = open_("riverbend", "LVS", AccountType.MEMBER, "ana")
        self.cai = open_("hilltop", "LVS", AccountType.MEMBER, "cai")
        self.system = open_("riverbend", "HRB", AccountType.LIQUIDITY, "liquidity")
        ledger.post_transaction(pay(issuance, self.ana, 5_000))
        ledger.post_transaction(pay(leaves, ana_leaves, 50, "LVS"))
        ledger.post_transaction(pay(leaves, self.cai, 50, "LVS"))
        ledger.post_transaction(pay(issuance, self.system, 100))
        self.member_accounts = {"member-ana": {self.ana, ana_leaves}, "member-cai": {self.cai}}
        self.counter = 0

    # -- the actors and the model ----------------------------------------------------------

    def actor(self, name: str) -> Actor:
        if name == "federation":
            return Actor(ActorRole.FEDERATION)
        if name.startswith("member-"):
            community = "riverbend" if name == "member-ana" else "hilltop"
            return Actor(
                ActorRole.MEMBER,
                self.community_ids[community],
                member_account_ids=frozenset(self.member_accounts[name]),
            )
        return Actor(ActorRole.TREASURER, self.community_ids[name])

    @staticmethod
    def community_of(name: str) -> str | None:
        if name == "federation":
            return None
        return {"member-ana": "riverbend", "member-cai": "hilltop"}.get(name, name)

    def is_issuer(self, name: str, currency: str) -> bool:
        issuer, _ = CURRENCIES[currency]
        if name.startswith("member-"):
            return False
        return name == "federation" if issuer is None else name == issuer

    def may_open(
        self, name: str, community: str, currency: str, kind: AccountType, floor: int | None
    ) -> bool:
        if name.startswith("member-"):
            return False
        if name != "federation" and community != name:
            return False
        if kind in (AccountType.LIQUIDITY, AccountType.CLEARING, AccountType.FEES):
            return False
        issuer, held = CURRENCIES[currency]
        if held == HeldIn.ISSUER and community != issuer:
            return False
        powered = kind == AccountType.ISSUANCE or floor is None or floor < 0
        return not powered or self.is_issuer(name, currency)

    def may_spend(self, name: str, account: tuple[int, str, str, AccountType]) -> bool:
        account_id, community, _, kind = account
        if kind in (AccountType.LIQUIDITY, AccountType.CLEARING, AccountType.FEES):
            return False
        if name == "federation":
            return True
        if name.startswith("member-"):
            return account_id in self.member_accounts[name]
        return community == name

    def snapshot(self) -> tuple[Any, ...]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, min_balance, max_balance, status, balance_posted, authorized_by"
                    " FROM accounts ORDER BY id"
                )
            ).all()
            count = connection.execute(text("SELECT count(*) FROM transactions")).scalar_one()
        return (*rows, count)

    def attempt(self, allowed: bool, act: Any) -> Any:
        before = self.snapshot()
        refusal: LedgerError | None = None
        try:
            result = act()
        except LedgerError as error:
            refusal = error
        if refusal is None:
            assert allowed, "a forbidden operation succeeded"
            return result
        code = str(refusal.code)
        assert self.snapshot() == before, f"refused ({code}) but something was written"
        if allowed:
            assert code not in AUTHORITY, f"an allowed operation refused for authority: {refusal}"
        else:
            assert code in AUTHORITY, f"a forbidden operation refused for {code}: {refusal}"
        return None

    # -- the operations ----------------------------------------------------------------------

    @rule(
        name=st.sampled_from(ACTORS),
        community=st.sampled_from(COMMUNITIES),
        currency=st.sampled_from(sorted(CURRENCIES)),
        kind=st.sampled_from(
            [AccountType.MEMBER, AccountType.ISSUANCE, AccountType.LIQUIDITY, AccountType.CLEARING]
        ),
        floor=st.sampled_from([0, -500, None]),
    )
    def open_account(
        self, name: str, community: str, currency: str, kind: AccountType, floor: int | None
    ) -> None:
        self.counter += 1
        account_name = f"a{self.counter}"
        floor_given = floor if kind != AccountType.ISSUANCE else None
        opened = self.attempt(
            self.may_open(name, community, currency, kind, floor_given),
            lambda: self.ledger.open_account(
                community=community,
                currency=currency,
                type=kind,
                name=account_name,
                min_balance=floor_given,
                actor=self.actor(name),
            ),
        )
        if opened is not None:
            self.accounts.append((opened.id, community, currency, kind))

    @rule(data=st.data(), name=st.sampled_from(ACTORS), amount=st.integers(1, 200))
    def pay_between(self, data: st.DataObject, name: str, amount: int) -> None:
        source = data.draw(st.sampled_from(self.accounts))
        destination = data.draw(st.sampled_from(self.accounts))
        if source[0] == destination[0] or source[2] != destination[2]:
            return
        system = (AccountType.LIQUIDITY, AccountType.CLEARING, AccountType.FEES)
        allowed = self.may_spend(name, source) and destination[3] not in system
        self.attempt(
            allowed,
            lambda: _raise_refusal(
                self.ledger.post_transaction(
                    pay(source[0], destination[0], amount, source[2]), actor=self.actor(name)
                )
            ),
        )

    @rule(
        data=st.data(),
        name=st.sampled_from(ACTORS),
        floor=st.sampled_from([0, 5, -100, None]),
        status=st.sampled_from([None, AccountStatus.FROZEN, AccountStatus.OPEN]),
    )
    def change_account(
        self, data: st.DataObject, name: str, floor: int | None, status: AccountStatus | None
    ) -> None:
        account = data.draw(st.sampled_from(self.accounts))
        account_id, community, currency, kind = account
        current = self.ledger.get_account(account_id).min_balance
        system = kind in (AccountType.LIQUIDITY, AccountType.CLEARING, AccountType.FEES)
        mine = name == "federation" or community == name
        powered = floor != current and (
            current is None or current < 0 or floor is None or floor < 0
        )
        allowed = (
            not system
            and not name.startswith("member-")
            and mine
            and (not powered or self.is_issuer(name, currency))
        )
        self.attempt(
            allowed,
            lambda: self.ledger.update_account(
                account_id, min_balance=floor, status=status, actor=self.actor(name)
            ),
        )

    # -- what must hold after every step -----------------------------------------------------

    @invariant()
    def sound(self) -> None:
        if not hasattr(self, "ledger"):
            return
        assert verify(self.engine) == []
        assert self.ledger.balance(self.system).posted == 100, "a system account moved"


def _raise_refusal(outcome: Any) -> Any:
    if outcome.error is not None:
        raise outcome.error
    return outcome


@pytest.mark.slow
def test_authority_holds_for_every_actor(engine: Engine) -> None:
    machine = type("Machine", (AuthorityMachine,), {"engine": engine})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
