"""The migrations build exactly the schema the models describe, on both engines.

In the spirit of Warehouse's ``db check``: run ``upgrade head`` on an empty SQLite file and
an empty PostgreSQL database, then let Alembic's autogenerate compare the result with the
models. Any difference (a column added to a model without a revision, a type changed, an
index forgotten, a table a revision creates that no model declares) fails here.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect

import migrations
from ledger.database import make_engine
from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL, REQUIRE_POSTGRES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "exchange", "api")

# Every module that declares tables. Importing one registers its tables on its metadata;
# a module added later (say a new api/ tables module) is one more line here, and
# ``test_every_table_module_is_compared`` fails until it is.
TABLE_MODULES = ("ledger.tables", "exchange.tables", "api.tables")


def _registered_metadata() -> tuple[MetaData, ...]:
    """Each distinct MetaData the table modules register on, in a stable order."""
    found: dict[int, MetaData] = {}
    for name in TABLE_MODULES:
        for value in vars(importlib.import_module(name)).values():
            metadata = getattr(value, "metadata", None) if isinstance(value, type) else value
            if isinstance(metadata, MetaData):
                found.setdefault(id(metadata), metadata)
    return tuple(found.values())


# What the comparison holds the database to. Today all three modules share
# ``ledger.tables.Base.metadata``; a module with a metadata of its own joins automatically.
METADATA: tuple[MetaData, ...] = _registered_metadata()


# -- empty databases --------------------------------------------------------------------------


def _admin(sql: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: no template, no migrations."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    try:
        _admin("SELECT 1")
    except psycopg.OperationalError as error:
        reason = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}"
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"heartleaf_migrations_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def _differences(engine: Engine) -> list[Any]:
    """What autogenerate would write into a new revision: [] when models and schema agree."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "render_as_batch": True}
        )
        # compare_metadata accepts a sequence of MetaData as env.py's target_metadata does.
        return list(compare_metadata(context, METADATA))  # type: ignore[arg-type]


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _model_tables() -> set[str]:
    return {table.name for metadata in METADATA for table in metadata.tables.values()}


# -- the tests --------------------------------------------------------------------------------


def test_upgrade_head_on_an_empty_database_matches_the_models(
    empty_url: str, empty_engine: Engine
) -> None:
    assert not migrations.is_at_head(empty_engine)

    migrations.upgrade(empty_url)

    assert migrations.is_at_head(empty_engine)
    assert _tables(empty_engine) == _model_tables() | {"alembic_version"}
    assert _differences(empty_engine) == []


def test_every_revision_goes_down_and_up_again(empty_url: str, empty_engine: Engine) -> None:
    revisions = _revisions()
    migrations.upgrade(empty_url)

    for revision in reversed(revisions):  # head first, one step at a time
        assert migrations.current_revision(empty_engine) == revision
        migrations.downgrade(empty_url, "-1")
    assert migrations.current_revision(empty_engine) is None
    assert _tables(empty_engine) <= {"alembic_version"}

    migrations.upgrade(empty_url)

    assert migrations.is_at_head(empty_engine)
    assert _differences(empty_engine) == []


def test_the_comparison_notices_a_model_the_migrations_lack(
    empty_url: str, empty_engine: Engine
) -> None:
    """The check can fail: a table only in the models shows up as a difference."""
    migrations.upgrade(empty_url)
    with empty_engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE counters")

    assert [difference[0] for difference in _differences(empty_engine)] == ["add_table"]


def _condition(text_value: str) -> str:
    """A partial index's condition, spelled alike on both engines (PostgreSQL reflects
    ``status <> 'posted'`` as ``((status)::text <> 'posted'::text)``)."""
    return re.sub(r"::\w+|[()\s]", "", text_value)


def test_partial_indexes_carry_the_condition_the_models_declare(
    empty_url: str, empty_engine: Engine
) -> None:
    """Autogenerate compares an index's columns, not its condition: checked here."""
    migrations.upgrade(empty_url)
    option = f"{empty_engine.dialect.name}_where"
    declared = {
        index.name: _condition(str(index.dialect_options[empty_engine.dialect.name]["where"]))
        for metadata in METADATA
        for table in metadata.tables.values()
        for index in table.indexes
        if index.dialect_options[empty_engine.dialect.name]["where"] is not None
    }
    inspector = inspect(empty_engine)
    built = {
        index["name"]: _condition(str(index["dialect_options"][option]))
        for table in inspector.get_table_names()
        for index in inspector.get_indexes(table)
        if option in index.get("dialect_options", {})
    }

    assert declared, "no partial index declared: this test would check nothing"
    assert built == declared


def test_on_sqlite_a_table_keyed_by_one_integer_keeps_its_rows_in_that_key(
    empty_url: str, empty_engine: Engine
) -> None:
    """A single INTEGER primary key is SQLite's rowid; declared BIGINT it becomes a second
    B-tree beside the table, one more page for every row written."""
    if empty_engine.dialect.name != "sqlite":
        pytest.skip("SQLite's rowid tables")
    migrations.upgrade(empty_url)
    separate: list[str] = []
    with empty_engine.connect() as connection:
        for metadata in METADATA:
            for table in metadata.tables.values():
                key = list(table.primary_key.columns)
                if len(key) != 1 or key[0].type.python_type is not int:
                    continue
                origins = connection.exec_driver_sql(f'PRAGMA index_list("{table.name}")')
                if any(row[3] == "pk" for row in origins):
                    separate.append(table.name)

    assert separate == []


# -- the revisions as files -------------------------------------------------------------------


def _revisions() -> list[str]:
    """Revision ids from base to head; asserts the history is one straight line."""
    script = ScriptDirectory.from_config(migrations.config("sqlite://"))
    assert len(script.get_heads()) == 1, "the history has more than one head"
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_revisions_are_date_named_and_form_one_line() -> None:
    files = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    revisions = _revisions()

    assert [name.removesuffix(".py")[:15] for name in files] == revisions
    assert all(re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{4}_[a-z0-9_]+\.py", name) for name in files)
    assert revisions[-1] == migrations.head_revision()


def _declares_tables(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__tablename__" for target in node.targets
        ):
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "Table"
        ):
            return True
    return False


def test_every_table_module_is_compared() -> None:
    declaring = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if _declares_tables(path)
    }

    assert declaring <= set(TABLE_MODULES), (
        f"add {sorted(declaring - set(TABLE_MODULES))} to TABLE_MODULES in {Path(__file__).name}"
    )
