"""``heartleaf``: serve the API, migrate, seed the demo, manage keys, verify the ledger,
and read balances, statements and reciprocity at a terminal.

What a script would read goes to stdout (tables, JSON, keys, violations); what a person
is told goes to stderr. Exit status: 0 done; 1 ``verify`` found a violation; 2 the command
was refused (a usage mistake, a missing or unmigrated database, a refusal of the ledger),
told as one line on stderr (``heartleaf: error: …``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from importlib import metadata

import yaml
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

import migrations
from api import exchange_cli, ledger_cli
from api import keys as key_store
from api.cli_database import CliError, display, help_of, ready_engine
from exchange.service import Exchange
from ledger.database import default_url
from ledger.errors import LedgerError
from ledger.service import Ledger, utc_now
from ledger.verify import verify


def _ready_engine() -> Engine:
    """The database, there and migrated; else one line naming it and how to create it."""
    return ready_engine()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only the server needs it

    _ready_engine().dispose()
    print(
        f"Heartleaf on http://{args.host}:{args.port}  (docs: http://{args.host}:{args.port}/docs)",
        file=sys.stderr,
    )
    uvicorn.run(
        "api.asgi:create",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = default_url()
    migrations.upgrade(url)
    print(f"database at {migrations.head_revision()}: {display(url)}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from api.app import build_ledger  # noqa: PLC0415 - FastAPI loads only when needed
    from api.demo import is_seeded, issue_tour_keys, seed_demo  # noqa: PLC0415

    engine = _ready_engine()
    ledger = build_ledger(engine)
    seeded_before = is_seeded(ledger)
    summary = seed_demo(ledger)  # on a seeded ledger: writes nothing
    if not seeded_before:
        print(
            f"seeded the demo federation: {summary.transactions} transactions "
            f"from {summary.since} until {summary.until}",
            file=sys.stderr,
        )
    elif not args.if_empty:
        print("the demo federation is already there; nothing written", file=sys.stderr)
    print(f"  export HEARTLEAF={args.server.rstrip('/')}")
    if not seeded_before or args.reissue_keys:
        keys = issue_tour_keys(engine, summary, utc_now())
        revoked = ", ".join(map(str, keys.revoked))
        print(
            "\nKeys for the tour (shown once; `heartleaf demo --reissue-keys` revokes them and "
            "prints new ones):" + (f" keys {revoked} revoked" if revoked else "")
        )
        print(
            f"  export FEDERATION_KEY={keys.federation_secret}"
            f"   # key {keys.federation.id}, role federation"
        )
        print(
            f"  export TREASURER_KEY={keys.treasurer_secret}"
            f"   # key {keys.treasurer.id}, treasurer of {keys.treasurer.community}"
        )
    else:
        print(
            "  # the tour's keys were shown when the demo was seeded (keys are stored hashed): "
            "`heartleaf demo --reissue-keys` revokes them and prints new ones"
        )
    print("\nAccounts for the tour (Ana and Bo of riverbend, Cai of hilltop):")
    print(
        f"  export ANA={summary.ana} BO={summary.bo} ANA_LEAF={summary.ana_leaf} "
        f"CAI={summary.cai} CAI_LEAF={summary.cai_leaf} RIVERBEND_SEK={summary.riverbend_sek}"
    )
    print("\nDemo federation:")
    for field in dataclasses.fields(summary):
        value = getattr(summary, field.name)
        shown = ", ".join(value) if isinstance(value, tuple) else value
        print(f"  {field.name}: {shown}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    record, secret = key_store.create_key(
        _ready_engine(),
        role=key_store.Role(args.role),
        community=args.community,
        label=args.label,
        now=utc_now(),
    )
    print(secret)
    print(
        f"key {record.id} ({record.role}{' of ' + record.community if record.community else ''}): "
        "store it now, it is not shown again",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    records = key_store.list_keys(_ready_engine())  # before the header: a refusal prints alone
    print(
        f"{'id':>4}  {'prefix':<10} {'role':<11} {'community':<14} "
        f"{'last used':<20} {'revoked':<20} label"
    )
    for record in records:
        print(
            f"{record.id:>4}  {record.prefix:<10} {record.role:<11} {record.community or '-':<14} "
            f"{_when(record.last_used_at):<20} {_when(record.revoked_at):<20} {record.label}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    engine = _ready_engine()
    withdraw = Exchange(Ledger(engine)).governance.withdraw_key
    record = key_store.revoke_key(engine, args.key_id, utc_now(), withdraw=withdraw)
    print(f"key {record.id} revoked at {_when(record.revoked_at)}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from exchange.reciprocity_verify import verify as reciprocity_verify  # noqa: PLC0415

    engine = _ready_engine()
    show = sys.stderr.isatty() or args.progress

    def progress(done: int, total: int) -> None:
        if show and total:
            filled = int(30 * done / total)
            print(
                f"\rverifying history [{'#' * filled}{'.' * (30 - filled)}] "
                f"{done:,}/{total:,} rows",
                end="",
                file=sys.stderr,
                flush=True,
            )

    try:
        violations = verify(engine, progress=progress)
        if show:
            print(file=sys.stderr)
        # The layers above the ledger keep invariants of their own: reciprocity's positions
        # and aggregates against the flows they are maintained from.
        violations += reciprocity_verify(engine)
    finally:
        engine.dispose()
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} violation(s) found", file=sys.stderr)
        return 1
    print("the ledger is sound: every invariant holds", file=sys.stderr)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from api.openapi import document  # noqa: PLC0415

    sys.stdout.write(yaml.safe_dump(document(), sort_keys=False, allow_unicode=True))
    return 0


def _when(instant: object) -> str:
    return "-" if instant is None else f"{instant:%Y-%m-%d %H:%M:%S}"


def _version() -> str:
    try:
        return metadata.version("heartleaf")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "unknown"


EPILOG = """\
exit status:
  0    done
  1    verify found a violation (each one printed on stdout)
  2    refused: a usage mistake, no database or one behind the migrations, or a refusal of
       the ledger (one line on stderr: heartleaf: error: ...)
  130  interrupted

Output a script would read (tables, --json, keys, violations, the OpenAPI document) goes to
stdout; messages for a person go to stderr.

database: DATABASE_URL (postgresql://user@host/db, or sqlite:///path), by default SQLite at
$HEARTLEAF_DATA_DIR/heartleaf.db (HEARTLEAF_DATA_DIR defaults to ./data). Only
`heartleaf db upgrade` creates it; every other command refuses, naming it, when it is not
there. To start: heartleaf db upgrade && heartleaf demo && heartleaf serve
"""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="heartleaf",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Heartleaf: the shared ledger of a federation of communities\n"
        "(Hearts and Leaves). `heartleaf COMMAND --help` tells more of each.",
    )
    root.add_argument("--version", action="version", version=f"heartleaf {_version()}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the REST API", description="Serve the REST API with uvicorn."
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; use PostgreSQL for more)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--no-access-log", dest="access_log", action="store_false", help="do not log each request"
    )
    serve.set_defaults(handler=cmd_serve)

    database = commands.add_parser(
        "db", help="database schema", description="Manage the database schema."
    )
    database_commands = database.add_subparsers(dest="db_command", metavar="COMMAND")
    database.set_defaults(handler=help_of(database))
    upgrade = database_commands.add_parser(
        "upgrade",
        help="migrate the database to the newest schema",
        description="Apply every pending Alembic migration.",
    )
    upgrade.set_defaults(handler=cmd_db_upgrade)

    demo = commands.add_parser(
        "demo",
        help="seed the demo federation and print keys for the tour",
        description="Seed four communities, their Hearts, the shared Leaves, accounts and a "
        "season of trade (a few hundred transactions over the four months before today), and "
        "print a federation key and a treasurer key for the tour, with the tour's account ids. "
        "On a database that holds the demo already, write nothing and mint no keys: print the "
        "account ids (keys are stored hashed and cannot be shown again; --reissue-keys revokes "
        "the tour's keys and prints new ones).",
    )
    demo.add_argument(
        "--if-empty",
        action="store_true",
        help="seed only if the demo is not there; when it is, write nothing, mint no keys and "
        "say nothing on stderr",
    )
    demo.add_argument(
        "--reissue-keys",
        action="store_true",
        help="revoke the tour's keys and print new ones (seeding first if need be)",
    )
    demo.add_argument(
        "--server",
        default="http://127.0.0.1:8000",
        metavar="URL",
        help="the server the tour's calls name, printed as HEARTLEAF (default "
        "http://127.0.0.1:8000)",
    )
    demo.set_defaults(handler=cmd_demo)

    keys = commands.add_parser(
        "keys", help="API keys", description="Create, list and revoke API keys."
    )
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND")
    keys.set_defaults(handler=help_of(keys))
    create = keys_commands.add_parser(
        "create",
        help="create a key (printed once)",
        description="Create an API key; the key is printed once on stdout.",
    )
    create.add_argument("--role", required=True, choices=[str(r) for r in key_store.Role])
    create.add_argument("--community", help="the community of a treasurer or viewer key")
    create.add_argument("--label", required=True, help="who or what uses the key")
    create.set_defaults(handler=cmd_keys_create)
    listing = keys_commands.add_parser(
        "list", help="list keys", description="List keys (never their secrets)."
    )
    listing.set_defaults(handler=cmd_keys_list)
    revoke = keys_commands.add_parser(
        "revoke", help="revoke a key", description="Revoke a key at once."
    )
    revoke.add_argument("key_id", type=int, help="the key's id (see `keys list`)")
    revoke.set_defaults(handler=cmd_keys_revoke)

    check = commands.add_parser(
        "verify",
        help="check every ledger invariant",
        description="Check every invariant from the stored rows; exit status 1 on any violation.",
    )
    check.add_argument(
        "--progress", action="store_true", help="show the progress bar even when not on a terminal"
    )
    check.set_defaults(handler=cmd_verify)

    openapi = commands.add_parser(
        "openapi",
        help="print the OpenAPI document (YAML)",
        description="Print the OpenAPI document the app serves, as YAML.",
    )
    openapi.set_defaults(handler=cmd_openapi)
    ledger_cli.add_commands(commands)
    exchange_cli.add_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if not arguments:  # a bare `heartleaf`: what it can do, not a usage error
        parser().print_help()
        return 0
    args = parser().parse_args(arguments)
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        print("heartleaf: interrupted", file=sys.stderr)
        return 130
    except (CliError, LedgerError) as error:
        print(f"heartleaf: error: {getattr(error, 'detail', error)}", file=sys.stderr)
        return 2
    except (OperationalError, ProgrammingError) as error:
        print(
            "heartleaf: error: the database is not usable: "
            + str(error.orig).strip().splitlines()[0],
            file=sys.stderr,
        )
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
