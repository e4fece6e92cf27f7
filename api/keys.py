"""API keys and the principal a request acts as.

A key reads ``hl_<prefix>_<secret>``: the prefix finds the row, the secret is checked
against its SHA-256 in constant time. The plaintext is returned once, at creation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row, Table, insert, select, update

from api.tables import ApiKeyRow
from ledger import repository as ledger_repository
from ledger.database import run_in_transaction
from ledger.errors import Code, LedgerError
from ledger.tables import CommunityRow, from_micros

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


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    role: Role
    community_id: int | None
    community: str | None

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


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    engine: Engine, *, role: Role, community: str | None, label: str, now: dt.datetime
) -> tuple[KeyRecord, str]:
    """Create a key; returns its record and the plaintext, which is never stored."""
    if (role in (Role.TREASURER, Role.VIEWER)) != (community is not None):
        raise LedgerError(
            Code.INVALID_REQUEST,
            "Treasurer and viewer keys belong to one community; "
            "federation and auditor keys to none.",
            field="community",
        )
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)

    def work(connection: Connection) -> KeyRecord:
        community_id = None
        if community is not None:
            row = ledger_repository.community_by_slug(connection, community)
            if row is None:
                raise LedgerError(Code.COMMUNITY_NOT_FOUND, field="community")
            community_id = row["id"]
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
            },
        ).scalar_one()
        return KeyRecord(key_id, prefix, role, community, label, now, None, None)

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
    )


def list_keys(engine: Engine) -> list[KeyRecord]:
    with engine.connect() as connection:
        return [
            _record(row) for row in connection.execute(_KEY_WITH_COMMUNITY.order_by(api_keys.c.id))
        ]


def revoke_key(engine: Engine, key_id: int, now: dt.datetime) -> KeyRecord:
    """Revoke a key (revoking twice keeps the first revocation time)."""

    def work(connection: Connection) -> KeyRecord:
        statement = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        connection.execute(statement.values(revoked_at=now))
        row = connection.execute(_KEY_WITH_COMMUNITY.where(api_keys.c.id == key_id)).first()
        if row is None:
            raise LedgerError(Code.KEY_NOT_FOUND, field="key_id")
        return _record(row)

    return run_in_transaction(engine, work, write=True)


# Every request reads its key: on the driver's cursor (``ledger.repository.raw``), where
# SQLAlchemy's statement building would cost more than the indexed read itself.
_KEY_BY_PREFIX = (
    "SELECT api_keys.id, api_keys.role, api_keys.community_id, communities.slug,"
    " api_keys.secret_hash, api_keys.revoked_at, api_keys.last_used_at"
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
    key_id, role, community_id, slug, secret_hash, revoked_at, last_used_at = rows[0]
    if revoked_at is not None or not hmac.compare_digest(secret_hash, _hash(secret)):
        return None
    return Authenticated(
        Principal(key_id, Role(role), community_id, slug),
        use_unrecorded=last_used_at is None
        or now - from_micros(last_used_at) >= LAST_USED_PRECISION,
    )


def record_use(engine: Engine, key_id: int, now: dt.datetime) -> None:
    run_in_transaction(
        engine,
        lambda connection: connection.execute(
            update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now)
        ),
        write=True,
    )
