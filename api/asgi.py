"""The ASGI entry point ``heartleaf serve`` hands to uvicorn (one app per worker)."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from ledger.database import make_engine


def create() -> FastAPI:
    return create_app(make_engine())
