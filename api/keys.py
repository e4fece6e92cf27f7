"""API keys and the principal a request acts as.

A key reads ``hl_<prefix>_<secret>``: the prefix finds the row, the secret is checked
against its SHA-256 in constant time. The plaintext is returned once, at creation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row, Table, insert, select, text, update

from api.tables import ApiKeyRow
from ledger import repository as ledger_repository
from ledger.database import run_in_transaction
from ledger.errors import Code, LedgerError, community_not_found
from ledger.tables import CommunityRow, from_micros, to_micros

api_keys = cast(Table, ApiKeyRow.__table__)
communities = cast(Table, CommunityRow.__table__)

# Writing last_used_at on every request would turn each read into a write; once a minute
# per key is as precise as "last used" needs to be.
LAST_USED_PRECISION = dt.timedelta(minutes=1)


class Role(StrEnum):
    FEDERATION = "federation"
    TREASURER = "treasurer"
    VIEWER = "viewer"
    AUDITOR = "auditor"
    MEMBER = "member"  # one member's accounts: read them, pay from them, nothing else


COMMUNITY_ROLES = (Role.TREASURER, Role.VIEWER, Role.MEMBER)
ROTATION_OVERLAP_MAX = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    role: Role
    community_id: int | None
    community: str | None
    member: str | None = None
    # A member key's own accounts (its member accounts in its community), read at sign-in.
    member_account_ids: frozenset[int] = frozenset()

    @property
    def reads_everything(self) -> bool:
        return self.role in (Role.FEDERATION, Role.AUDITOR)

    @property
    def idempotency_scope(self) -> str:
        """Whose namespace client ids live in: a community's, or the federation's."""
        return f"community:{self.community_id}" if self.community_id is not None else "federation"

    def may_read_community(self, community_id: int) -> bool:
        return self.reads_everything or community_id == self.community_id


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    prefix: str
    role: Role
    community: str | None
    label: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None = None
    member: str | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    engine: Engine,
    *,
    role: Role,
    community: str | None,
    label: str,
    now: dt.datetime,
    member: str | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[KeyRecord, str]:
    """Create a key; returns its record and the plaintext, which is never stored. A member
    key names its member: the member accounts of that name in its community."""
    if (role in COMMUNITY_ROLES) != (community is not None):
        raise LedgerError(
            Code.INVALID_REQUEST,
            "Treasurer, viewer and member keys belong to one community; "
            "federation and auditor keys to none.",
            field="community",
        )
    if (role == Role.MEMBER) != (member is not None):
        raise LedgerError(
            Code.INVALID_REQUEST,
            "A member key names its member (the name of the member's accounts); "
            "keys of other roles name none.",
            field="member",
        )
    if expires_at is not None and expires_at <= now:
        raise LedgerError(
            Code.INVALID_REQUEST,
            "expires_at is an instant in the future, or null for a key that does not expire.",
            field="expires_at",
        )
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)

    def work(connection: Connection) -> KeyRecord:
        community_id = None
        if community is not None:
            row = ledger_repository.community_by_slug(connection, community)
            if row is None:
                raise community_not_found(community)
            community_id = row["id"]
        if member is not None and (
            community_id is None or not _member_accounts(connection, community_id, member)
        ):
            raise LedgerError(
                Code.ACCOUNT_NOT_FOUND,
                f"{community} has no member account named {member!r}; open the member's "
                "accounts first, then create the key.",
                field="member",
            )
        key_id = connection.execute(
            insert(api_keys).returning(api_keys.c.id),
            {
                "prefix": prefix,
                "secret_hash": _hash(secret),
                "role": str(role),
                "community_id": community_id,
                "label": label,
                "created_at": now,
                "last_used_at": None,
                "revoked_at": None,
                "expires_at": expires_at,
                "member": member,
            },
        ).scalar_one()
        return KeyRecord(
            key_id, prefix, role, community, label, now, None, None, expires_at, member
        )

    record = run_in_transaction(engine, work, write=True)
    return record, f"hl_{prefix}_{secret}"


_KEY_WITH_COMMUNITY = select(api_keys, communities.c.slug).outerjoin(
    communities, communities.c.id == api_keys.c.community_id
)


def _record(row: Row[Any]) -> KeyRecord:
    return KeyRecord(
        row.id,
        row.prefix,
        Role(row.role),
        row.slug,
        row.label,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
        row.expires_at,
        row.member,
    )


def list_keys(engine: Engine) -> list[KeyRecord]:
    with engine.connect() as connection:
        return [
            _record(row) for row in connection.execute(_KEY_WITH_COMMUNITY.order_by(api_keys.c.id))
        ]


def signatory(key_id: int) -> str:
    """How governance names a key that proposes or approves a change."""
    return f"key:{key_id}"


def revoke_key(
    engine: Engine,
    key_id: int,
    now: dt.datetime,
    *,
    withdraw: Callable[[Connection, str, dt.datetime], None] | None = None,
) -> KeyRecord:
    """Revoke a key (revoking twice keeps the first revocation time). ``withdraw`` runs in
    the same unit of work when this revocation is the first: governance withdraws what the
    key approved or proposed that is still pending."""

    def work(connection: Connection) -> KeyRecord:
        statement = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        revoked = connection.execute(statement.values(revoked_at=now)).rowcount
        if revoked and withdraw is not None:
            withdraw(connection, signatory(key_id), now)
        row = connection.execute(_KEY_WITH_COMMUNITY.where(api_keys.c.id == key_id)).first()
        if row is None:
            raise LedgerError(
                Code.KEY_NOT_FOUND,
                f"There is no API key {key_id}; GET /v1/keys lists them.",
                field="key_id",
            )
        return _record(row)

    return run_in_transaction(engine, work, write=True)


# Every request reads its key: on the driver's cursor (``ledger.repository.raw``), where
# SQLAlchemy's statement building would cost more than the indexed read itself.
_KEY_BY_PREFIX = (
    "SELECT api_keys.id, api_keys.role, api_keys.community_id, communities.slug,"
    " api_keys.secret_hash, api_keys.revoked_at, api_keys.last_used_at, api_keys.expires_at,"
    " api_keys.previous_secret_hash, api_keys.previous_valid_until, api_keys.member"
    " FROM api_keys LEFT OUTER JOIN communities ON communities.id = api_keys.community_id"
    " WHERE api_keys.prefix = :prefix"
)


@dataclass(frozen=True, slots=True)
class Authenticated:
    principal: Principal
    use_unrecorded: bool  # no use recorded within LAST_USED_PRECISION of now: ``record_use``


def authenticate(engine: Engine, token: str, now: dt.datetime) -> Authenticated | None:
    """The principal a bearer token stands for, or None for anything not a live key.

    One indexed statement outside a transaction, which waits for no writer on either
    database (SQLite's WAL, PostgreSQL's MVCC), so the API runs it on its event loop when a
    pooled connection is free (``fetch_outside_transaction`` says why not in a unit of
    work). Recording the use is a write, which may wait for one: ``record_use``."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "hl":
        return None
    _, prefix, secret = parts
    rows = ledger_repository.fetch_outside_transaction(engine, _KEY_BY_PREFIX, {"prefix": prefix})
    if not rows:
        return None
    (
        key_id,
        role,
        community_id,
        slug,
        secret_hash,
        revoked_at,
        last_used_at,
        expires_at,
        previous_hash,
        previous_until,
        member,
    ) = rows[0]
    if revoked_at is not None or (expires_at is not None and to_micros(now) >= expires_at):
        return None
    given = _hash(secret)
    current = hmac.compare_digest(secret_hash, given)
    former = (
        previous_hash is not None
        and previous_until is not None
        and to_micros(now) < previous_until
        and hmac.compare_digest(previous_hash, given)
    )
    if not (current or former):
        return None
    own: frozenset[int] = frozenset()
    if member is not None:
        own = frozenset(
            row[0]
            for row in ledger_repository.fetch_outside_transaction(
                engine, _MEMBER_ACCOUNTS, {"community_id": community_id, "name": member}
            )
        )
    return Authenticated(
        Principal(key_id, Role(role), community_id, slug, member, own),
        use_unrecorded=last_used_at is None
        or now - from_micros(last_used_at) >= LAST_USED_PRECISION,
    )


_MEMBER_ACCOUNTS = (
    "SELECT id FROM accounts WHERE community_id = :community_id AND name = :name"
    " AND type = 'member'"
)


def _member_accounts(connection: Connection, community_id: int, member: str) -> list[int]:
    return [
        row[0]
        for row in connection.execute(
            text(_MEMBER_ACCOUNTS), {"community_id": community_id, "name": member}
        )
    ]


def rotate_key(
    engine: Engine, key_id: int, now: dt.datetime, overlap: dt.timedelta
) -> tuple[KeyRecord, str]:
    """Give a key a new secret; the old one keeps working for ``overlap`` (at most
    ``ROTATION_OVERLAP_MAX``), so its clients can switch without a gap. The prefix stays."""
    if not dt.timedelta(0) <= overlap <= ROTATION_OVERLAP_MAX:
        raise LedgerError(
            Code.INVALID_REQUEST,
            "The old secret may keep working for 0 seconds to 30 days.",
            field="old_secret_valid_seconds",
        )
    secret = secrets.token_urlsafe(32)

    def work(connection: Connection) -> KeyRecord:
        row = connection.execute(_KEY_WITH_COMMUNITY.where(api_keys.c.id == key_id)).first()
        if row is None:
            raise LedgerError(
                Code.KEY_NOT_FOUND,
                f"There is no API key {key_id}; GET /v1/keys lists them.",
                field="key_id",
            )
        if row.revoked_at is not None:
            raise LedgerError(
                Code.KEY_NOT_FOUND, "The key is revoked; create a new one.", field="key_id"
            )
        connection.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(
                secret_hash=_hash(secret),
                previous_secret_hash=row.secret_hash,
                previous_valid_until=now + overlap,
            )
        )
        return _record(row)

    record = run_in_transaction(engine, work, write=True)
    return record, f"hl_{record.prefix}_{secret}"


def record_use(engine: Engine, key_id: int, now: dt.datetime) -> None:
    run_in_transaction(
        engine,
        lambda connection: connection.execute(
            update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now)
        ),
        write=True,
    )
