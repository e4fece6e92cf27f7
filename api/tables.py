"""Tables only the HTTP edge needs: API keys and idempotency records. Same metadata as the
ledger's, so one Alembic history covers the whole schema."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ledger.tables import Base, Instant


class ApiKeyRow(Base):
    """An API key. Only a SHA-256 of the secret is stored: keys are 256-bit random, so a
    fast hash is enough (no dictionary to attack) and lookups stay one index probe."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"))
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Instant)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    # After this instant the key no longer authenticates; None: it does not expire.
    expires_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    # A member key: the member's name in its community (its member accounts bear it).
    member: Mapped[str | None] = mapped_column(String(200))
    # A rotated key's former secret, which still works until ``previous_valid_until``.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64))
    previous_valid_until: Mapped[dt.datetime | None] = mapped_column(Instant)


class IdempotencyRow(Base):
    """The first answer to a create that is not a ledger transaction (transactions keep
    their client id in the ledger itself), replayed for a retry with the same key."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(Instant)
