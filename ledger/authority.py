"""Authority over money: who may issue a currency, who may hold it, who moves which account.

Authority is a ledger rule like a floor. Every write takes the ``Actor`` it acts for, and
the rules here run inside the unit of work that writes, on the rows it locked:

- A currency's **kind** says what it may do (``KIND_RULES``): who issues it (its community
  for Hearts, the federation for the rest), where it may be held by default, whether it
  converts, whether it may serve as the federation's reference unit.
- Its **issuer** alone opens issuance accounts in it, and gives an account of that currency
  a floor below zero (a credit line) or no floor, or changes such a floor.
- Its **holding policy** (``HeldIn``) says which communities may open accounts in it.
- **System accounts** (``SYSTEM_ACCOUNT_OWNERS``) belong to the layer whose operation moves
  them: the exchange's liquidity, fees and rounding accounts, reciprocity's position
  (clearing) accounts. No key opens, posts from or to, patches, freezes or closes one; an
  actor moves one only while it runs that layer's operation (``Actor.operation``).
- A **treasurer** spends from its own community's accounts only; a **federation** key from
  any community's ordinary accounts; the **operator** (the CLI and the demo, which hold the
  database itself) from any account.

A refusal never names an account the actor cannot see: a treasurer spending from another
community's account, or paying into another community's system account, is told the
account does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from ledger.errors import Code, LedgerError, account_not_found
from ledger.model import AccountType, CurrencyKind


class HeldIn(StrEnum):
    """Which communities may open accounts in a currency (system accounts aside)."""

    ISSUER = "issuer"  # the issuer's own community only
    ALL = "all"  # every community of the federation
    SYSTEM = "system"  # system accounts only (the reference unit)


class Issuer(StrEnum):
    COMMUNITY = "community"
    FEDERATION = "federation"


@dataclass(frozen=True, slots=True)
class KindRule:
    issued_by: Issuer
    held_in: HeldIn  # the default holding policy; the issuer may change it
    converts: bool  # may appear in an exchange protocol
    reference: bool  # may be the federation's reference unit


# What each kind of currency may do: the one table, read by every check that asks.
KIND_RULES: Final[dict[CurrencyKind, KindRule]] = {
    CurrencyKind.HEARTS: KindRule(Issuer.COMMUNITY, HeldIn.ISSUER, converts=True, reference=False),
    CurrencyKind.LEAVES: KindRule(Issuer.FEDERATION, HeldIn.ALL, converts=True, reference=False),
    CurrencyKind.EXTERNAL: KindRule(Issuer.FEDERATION, HeldIn.ALL, converts=True, reference=False),
    CurrencyKind.UNIT: KindRule(Issuer.FEDERATION, HeldIn.SYSTEM, converts=False, reference=True),
}

# The layer that owns each system account type; only that layer's operation moves one.
SYSTEM_ACCOUNT_OWNERS: Final[dict[AccountType, str]] = {
    AccountType.LIQUIDITY: "exchange",
    AccountType.FEES: "exchange",
    AccountType.ROUNDING: "exchange",
    AccountType.CLEARING: "reciprocity",
}
EXCHANGE: Final = "exchange"
RECIPROCITY: Final = "reciprocity"
# A reversal mirrors a transaction its own operation wrote, system postings included.
REVERSAL: Final = "reversal"


class ActorRole(StrEnum):
    OPERATOR = "operator"  # holds the database: the CLI, the demo, the tests' setup
    FEDERATION = "federation"
    TREASURER = "treasurer"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who a write acts for. ``operation`` is the system layer whose operation is running
    (a conversion, the reciprocity booking), which may move that layer's accounts."""

    role: ActorRole
    community_id: int | None = None
    operation: str | None = None
    # For a member: the accounts that are the member's own.
    member_account_ids: frozenset[int] = frozenset()

    @property
    def scope(self) -> str:
        """The actor as recorded in ``accounts.authorized_by``."""
        if self.role == ActorRole.OPERATOR:
            return "operator"
        if self.role == ActorRole.FEDERATION:
            return "federation"
        return f"community:{self.community_id}"

    def running(self, operation: str) -> Actor:
        """The same actor while a system layer's operation runs on its behalf."""
        return replace(self, operation=operation)

    def is_issuer_of(self, issuer_community_id: int | None) -> bool:
        if self.role == ActorRole.OPERATOR:
            return True
        if issuer_community_id is None:
            return self.role == ActorRole.FEDERATION
        return self.role == ActorRole.TREASURER and self.community_id == issuer_community_id

    def sees(self, community_id: int) -> bool:
        return self.role in (ActorRole.OPERATOR, ActorRole.FEDERATION) or (
            community_id == self.community_id
        )

    def may_spend(self, account_id: int, community_id: int) -> bool:
        """May this actor's own authority take value out of an ordinary account?"""
        if self.role in (ActorRole.OPERATOR, ActorRole.FEDERATION):
            return True
        if self.role == ActorRole.MEMBER:
            return account_id in self.member_account_ids
        return community_id == self.community_id


OPERATOR: Final = Actor(ActorRole.OPERATOR)


def system_owner(account_type: AccountType | str) -> str | None:
    return SYSTEM_ACCOUNT_OWNERS.get(AccountType(account_type))


def issuer_scope(issuer_community_id: int | None) -> str:
    return "federation" if issuer_community_id is None else f"community:{issuer_community_id}"


def check_currency_kind(kind: CurrencyKind, issuer_community_id: int | None) -> None:
    rule = KIND_RULES[kind]
    if (rule.issued_by == Issuer.COMMUNITY) != (issuer_community_id is not None):
        accepted = "a community" if rule.issued_by == Issuer.COMMUNITY else "the federation"
        raise LedgerError(
            Code.ISSUER_INVALID,
            f"A {kind} currency is issued by {accepted}: "
            + ("name the issuing community." if issuer_community_id is None else "omit issuer."),
            field="issuer",
        )


def check_may_open(
    actor: Actor,
    *,
    account_type: AccountType,
    community_id: int,
    community_slug: str,
    currency_code: str,
    issuer_community_id: int | None,
    held_in: HeldIn,
    min_balance: int | None,
) -> str | None:
    """Refuse an account the actor may not open; return what ``authorized_by`` records."""
    if actor.role == ActorRole.MEMBER or (
        actor.role == ActorRole.TREASURER and actor.community_id != community_id
    ):
        raise LedgerError(
            Code.FORBIDDEN,
            "A treasurer key opens accounts in its own community only; a member key opens none.",
            field="community",
        )
    owner = system_owner(account_type)
    if owner is not None:
        if actor.role != ActorRole.OPERATOR and actor.operation != owner:
            raise LedgerError(
                Code.SYSTEM_ACCOUNT,
                f"A {account_type} account belongs to the {owner} layer, which opens it when "
                "its operation first needs it; open a member, provider, treasury or issuance "
                "account instead.",
                field="type",
            )
        return None
    issuer = actor.is_issuer_of(issuer_community_id)
    if held_in == HeldIn.SYSTEM or (
        held_in == HeldIn.ISSUER and community_id != issuer_community_id
    ):
        where = "system accounts only" if held_in == HeldIn.SYSTEM else "its issuer's community"
        raise LedgerError(
            Code.CURRENCY_NOT_HELD,
            f"{currency_code} is held in {where}, so {community_slug} cannot open an account "
            "in it; pay in a currency the community holds, or convert.",
            field="currency",
        )
    powered = account_type == AccountType.ISSUANCE or min_balance is None or min_balance < 0
    if not powered:
        return None
    if not issuer:
        raise LedgerError(
            Code.ISSUANCE_NOT_AUTHORIZED,
            f"Only {currency_code}'s issuer ("
            + ("the federation" if issuer_community_id is None else "its community's treasurer")
            + ") opens issuance accounts or grants credit below zero in it; "
            "open the account with a floor of 0 or more.",
            field="type" if account_type == AccountType.ISSUANCE else "min_balance",
        )
    return actor.scope


def check_may_change_floor(
    actor: Actor,
    *,
    currency_code: str,
    issuer_community_id: int | None,
    current: int | None,
    new: int | None,
    account_type: AccountType,
) -> bool:
    """Refuse a floor change the actor may not make; True when the new floor is a power
    (below zero or none) whose authority ``authorized_by`` must record."""
    powered_now = current is None or current < 0
    powered_next = new is None or new < 0
    powered = powered_now or powered_next or account_type == AccountType.ISSUANCE
    if powered and current != new and not actor.is_issuer_of(issuer_community_id):
        raise LedgerError(
            Code.ISSUANCE_NOT_AUTHORIZED,
            f"Only {currency_code}'s issuer sets, changes or lifts a floor below zero in "
            "it; a floor of 0 or more may be raised by the account's treasurer.",
            field="min_balance",
        )
    return powered_next or account_type == AccountType.ISSUANCE


def check_may_change_account(
    actor: Actor, account_type: AccountType, account_id: int, community_id: int
) -> None:
    """Refuse a change of limits, status or metadata the actor may not make: another
    community's account looks missing; a member changes none; no key changes a system
    account."""
    if actor.role == ActorRole.TREASURER and actor.community_id != community_id:
        raise account_not_found(account_id)
    if actor.role == ActorRole.MEMBER:
        raise LedgerError(
            Code.FORBIDDEN,
            "A member key changes no account's limits or status; ask the treasurer.",
            account_id=account_id,
        )
    owner = system_owner(account_type)
    if owner is not None and actor.role != ActorRole.OPERATOR and actor.operation != owner:
        raise LedgerError(
            Code.SYSTEM_ACCOUNT,
            f"Account {account_id} belongs to the {owner} layer: only its operation moves or "
            "changes it, and no key patches, freezes or closes it.",
            account_id=account_id,
        )


def posting_refusal(
    actor: Actor,
    *,
    account_id: int,
    account_type: str,
    community_id: int,
    source: bool,
) -> LedgerError | None:
    """Why the actor may not move this account in a posting, if it may not."""
    owner = system_owner(account_type)
    if owner is not None:
        if actor.role == ActorRole.OPERATOR or actor.operation in (owner, REVERSAL):
            return None
        if not actor.sees(community_id):
            return account_not_found(account_id)
        return LedgerError(
            Code.SYSTEM_ACCOUNT,
            f"Account {account_id} belongs to the {owner} layer: only its operation (a "
            f"{'conversion' if owner == EXCHANGE else 'reciprocity booking or clearing'}) "
            "moves it; pay between ordinary accounts instead.",
            account_id=account_id,
        )
    if source and not actor.may_spend(account_id, community_id):
        # Another community's account, or another member's: it looks missing.
        return account_not_found(account_id)
    return None
