"""``heartleaf balances | statement | reciprocity``: what a treasurer reads, at a terminal.

The same reads as ``GET /v1/accounts?community=…``, ``GET /v1/accounts/{id}/statement`` and
``GET /v1/reciprocity/communities/{community}``, straight from the ledger and exchange
services on the database ``DATABASE_URL`` names (no server, no key: whoever can open the
database reads all of it, as the other commands do).

Tables show amounts in their currency (``♡156.00``, ``🍃5``, ``220.00 kr``); ``--json``
prints the answer for scripts instead, with amounts as integers of minor units beside
their currency code, as the API gives them. Listings come a page at a time: ``--limit``
sets its size and ``--cursor`` takes the ``next_cursor`` a page ended with (a table names
it on stderr, the JSON carries it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import unicodedata
from decimal import Decimal
from fractions import Fraction
from typing import Any

from api.cli_database import CliError, ready_engine
from ledger.errors import Code, LedgerError
from ledger.model import Account, Currency, StatementLine
from ledger.money import format_minor
from ledger.service import Ledger

PAGE_DEFAULT = 50
PAGE_MAX = 1000


# -- formatting ---------------------------------------------------------------------------------


def money(minor: int, currency: Currency) -> str:
    """``money(15600, HRB) == "♡156.00"``: grouped thousands, the currency's decimals, its
    symbol before the figure when it is a sign (♡, 🍃, ¤) and after it when it is a word."""
    whole, _, fraction = format_minor(abs(minor), currency.scale).partition(".")
    figure = f"{int(whole):,}" + (f".{fraction}" if fraction else "")
    sign = "-" if minor < 0 else ""
    symbol = currency.symbol or currency.code
    if any(character.isalnum() for character in symbol):
        return f"{sign}{figure} {symbol}"
    return f"{sign}{symbol}{figure}"


def _width(text: str) -> int:
    """Columns a terminal gives the text: wide characters (🍃) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _right(text: str, width: int) -> str:
    return " " * max(width - _width(text), 0) + text


def _left(text: str, width: int) -> str:
    return text + " " * max(width - _width(text), 0)


def _table(header: list[str], rows: list[list[str]], numeric: set[int]) -> None:
    widths = [max([_width(h)] + [_width(r[i]) for r in rows]) for i, h in enumerate(header)]
    for row in [header, *rows]:
        cells = [
            _right(cell, widths[i]) if i in numeric else _left(cell, widths[i])
            for i, cell in enumerate(row)
        ]
        print("  ".join(cells).rstrip())


def _json_out(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _ratio(value: Fraction) -> str:
    """A ratio to two places for reading (the JSON carries it exact), never via a float."""
    shown = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.01"))
    return f"{shown:+}"


def _when(instant: dt.datetime) -> str:
    return f"{instant.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


def _more(cursor: str | None, command: str) -> None:
    if cursor is not None:
        print(f"more: {command} --cursor {cursor}", file=sys.stderr)


def _instant(text: str | None, name: str) -> dt.datetime | None:
    """An RFC 3339 instant with its offset, or a plain date meaning its start in UTC."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
        instant = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise CliError(
            f"{name} {text!r} is not a date (2026-12-01) or an instant with its offset "
            "(2026-12-01T09:00:00Z)"
        ) from error
    if instant.tzinfo is None:
        raise CliError(f"{name} {text!r} has no offset: add Z or +01:00")
    return instant.astimezone(dt.UTC)


def _day(text: str | None, name: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise CliError(f"{name} {text!r} is not a day such as 2026-12-01") from error


def _ledger() -> Ledger:
    # Reads only: no observer of writes is needed, nor FastAPI, whose import costs a second.
    return Ledger(ready_engine())


def _community(ledger: Ledger, slug: str) -> None:
    """Refuse an unknown community by name, with the ones there are."""
    slugs = [c.slug for c in ledger.list_communities()]
    if slug not in slugs:
        known = ", ".join(slugs) or "none yet"
        raise CliError(f"there is no community {slug!r} (communities: {known})")


def _account(ledger: Ledger, account_id: int) -> Account:
    try:
        return ledger.get_account(account_id)
    except LedgerError as error:
        if error.code != Code.ACCOUNT_NOT_FOUND:
            raise
        raise CliError(
            f"there is no account {account_id} (`heartleaf balances COMMUNITY` lists the ids)"
        ) from error


def _balance_json(account: Account) -> dict[str, Any]:
    balance = account.balance
    return {
        "posted": balance.posted,
        "debits_pending": balance.debits_pending,
        "credits_pending": balance.credits_pending,
        "available": balance.available,
    }


# -- balances -----------------------------------------------------------------------------------


def cmd_balances(args: argparse.Namespace) -> int:
    ledger = _ledger()
    _community(ledger, args.community)
    currencies = {c.code: c for c in ledger.list_currencies()}
    page = ledger.list_accounts(
        community=args.community,
        currency=args.currency,
        cursor=args.cursor,
        limit=args.limit,
    )
    if args.json:
        _json_out(
            {
                "community": args.community,
                "items": [
                    {
                        "id": a.id,
                        "community": a.community,
                        "currency": a.currency,
                        "type": str(a.type),
                        "name": a.name,
                        "status": str(a.status),
                        "min_balance": a.min_balance,
                        "max_balance": a.max_balance,
                        "balance": _balance_json(a),
                    }
                    for a in page.items
                ],
                "next_cursor": page.next_cursor,
            }
        )
        return 0
    rows = []
    for a in page.items:
        currency = currencies[a.currency]
        held = a.balance.debits_pending
        rows.append(
            [
                str(a.id),
                a.name,
                str(a.type),
                a.currency,
                str(a.status),
                money(a.balance.posted, currency),
                money(a.balance.available, currency),
                money(held, currency) if held else "-",
            ]
        )
    header = ["id", "name", "type", "currency", "status", "balance", "available", "on hold"]
    _table(header, rows, numeric={0, 5, 6, 7})
    if not rows:
        print(f"{args.community} has no accounts here", file=sys.stderr)
    _more(page.next_cursor, f"heartleaf balances {args.community}")
    return 0


# -- statement ----------------------------------------------------------------------------------


def _counterparties(ledger: Ledger, lines: tuple[StatementLine, ...]) -> dict[int, Account]:
    ids = {line.counterparty_account_id for line in lines if line.counterparty_account_id}
    return {i: ledger.get_account(i) for i in sorted(ids)}


def cmd_statement(args: argparse.Namespace) -> int:
    ledger = _ledger()
    account = _account(ledger, args.account_id)
    currency = ledger.get_currency(account.currency)
    page = ledger.statement(
        args.account_id,
        since=_instant(args.since, "--since"),
        until=_instant(args.until, "--until"),
        cursor=args.cursor,
        limit=args.limit,
    )
    others = _counterparties(ledger, page.items)

    def counterparty(line: StatementLine) -> Account | None:
        found = line.counterparty_account_id
        return None if found is None else others.get(found)

    if args.json:
        _json_out(
            {
                "account_id": account.id,
                "community": account.community,
                "name": account.name,
                "currency": account.currency,
                "items": [
                    {
                        "entry_id": line.entry_id,
                        "transaction_id": line.transaction_id,
                        "kind": str(line.kind),
                        "at": line.at,
                        "effective_date": line.effective_date,
                        "amount": line.amount,
                        "debits_pending_change": line.debits_pending_change,
                        "credits_pending_change": line.credits_pending_change,
                        "balance": {
                            **dataclasses.asdict(line.balance),
                            "available": line.balance.available,
                        },
                        "counterparty_account_id": line.counterparty_account_id,
                        "counterparty": None
                        if (other := counterparty(line)) is None
                        else {"community": other.community, "name": other.name},
                        "memo": line.memo,
                        "category": line.category,
                    }
                    for line in page.items
                ],
                "next_cursor": page.next_cursor,
            }
        )
        return 0
    print(
        f"account {account.id}: {account.name} of {account.community}, {currency.name} "
        f"({account.currency}); balance now {money(account.balance.posted, currency)}",
        file=sys.stderr,
    )
    rows = []
    for line in page.items:
        held = line.credits_pending_change - line.debits_pending_change
        other = counterparty(line)
        rows.append(
            [
                _when(line.at),
                str(line.transaction_id),
                str(line.kind),
                money(line.amount, currency) if line.amount else "-",
                money(held, currency) if held else "-",
                money(line.balance.posted, currency),
                "-" if other is None else f"{other.community}/{other.name} (#{other.id})",
                " · ".join(part for part in (line.category, line.memo) if part) or "-",
            ]
        )
    header = ["at (UTC)", "tx", "kind", "change", "held", "balance", "counterparty", "memo"]
    _table(header, rows, numeric={1, 3, 4, 5})
    if not rows:
        print("no history in this window", file=sys.stderr)
    _more(page.next_cursor, f"heartleaf statement {account.id}")
    return 0


# -- reciprocity --------------------------------------------------------------------------------


def cmd_reciprocity(args: argparse.Namespace) -> int:
    from exchange.reciprocity import DayWindow, Figures, Reciprocity  # noqa: PLC0415

    start, end = _day(args.since, "--from"), _day(args.until, "--to")
    if (start is None) != (end is None):
        raise CliError("give both --from and --to for a window, or neither for all time")
    ledger = _ledger()
    _community(ledger, args.community)
    reciprocity = Reciprocity(ledger)
    window = None if start is None or end is None else DayWindow.of(start, end)
    report = reciprocity.community(args.community, window)
    line = reciprocity.credit_line(args.community)
    unit = ledger.get_currency(report.reference_unit)

    if args.json:
        _json_out(
            {
                "community": report.community,
                "reference_unit": report.reference_unit,
                "window": None
                if report.window is None
                else {"from": report.window.since, "to": report.window.until},
                **report.figures.as_json(),
                "counterparties": [
                    {"community": c.community, **c.figures.as_json()} for c in report.counterparties
                ],
                "unvalued_transactions": report.unvalued_transactions,
                "credit_line": {
                    "credit_limit": line.credit_limit,
                    "position": line.position,
                    "headroom": line.headroom,
                },
            }
        )
        return 0
    span = (
        "all time"
        if report.window is None
        else f"{report.window.since} to {report.window.until} (not counted)"
    )
    print(
        f"reciprocity of {report.community}, {span}, in {unit.name} ({unit.code})",
        file=sys.stderr,
    )

    def row(name: str, values: Figures) -> list[str]:
        index = values.index
        return [
            name,
            money(values.given, unit),
            money(values.received, unit),
            money(values.net, unit),
            "-" if index is None else _ratio(index),
        ]

    rows = [row(c.community, c.figures) for c in report.counterparties]
    rows.append(row("all", report.figures))
    _table(["with", "given", "received", "net", "index"], rows, numeric={1, 2, 3, 4})
    limit = "none" if line.credit_limit is None else money(line.credit_limit, unit)
    headroom = "" if line.headroom is None else f", headroom {money(line.headroom, unit)}"
    print(f"position {money(line.position, unit)}; credit line: {limit}{headroom}")
    if report.unvalued_transactions:
        print(
            f"{report.unvalued_transactions} transaction(s) could not be valued and are not "
            "counted",
            file=sys.stderr,
        )
    return 0


# -- the parser ---------------------------------------------------------------------------------


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= PAGE_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a page size from 1 to {PAGE_MAX}")
    return value


def _account_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an account id such as 5")
    return int(text)


def _paging(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--limit",
        type=_limit,
        default=PAGE_DEFAULT,
        metavar="N",
        help=f"rows per page, 1 to {PAGE_MAX} (default {PAGE_DEFAULT})",
    )
    command.add_argument(
        "--cursor", metavar="CURSOR", help="the next page: the cursor the previous page named"
    )
    command.add_argument(
        "--json",
        action="store_true",
        help="print JSON for scripts (amounts in minor units, next_cursor included)",
    )


def add_commands(commands: Any) -> None:
    """Add ``balances``, ``statement`` and ``reciprocity`` to the ``heartleaf`` parser."""
    balances = commands.add_parser(
        "balances",
        help="a community's accounts and their balances",
        description="Every account of a community with its balance, what is available to "
        "spend and what is on hold, in the account's currency, ordered by account id.",
    )
    balances.add_argument("community", metavar="COMMUNITY", help="community slug, e.g. riverbend")
    balances.add_argument("--currency", metavar="CODE", help="only accounts in this currency")
    _paging(balances)
    balances.set_defaults(handler=cmd_balances)

    statement = commands.add_parser(
        "statement",
        help="an account's history, with the balance after each line",
        description="An account's history in ledger order, oldest first: what each "
        "transaction changed, what it put on hold, the balance after it and who was on the "
        "other side.",
    )
    statement.add_argument("account_id", type=_account_id, metavar="ACCOUNT_ID", help="account id")
    statement.add_argument(
        "--since", metavar="WHEN", help="from this instant (or date, meaning 00:00 UTC) on"
    )
    statement.add_argument(
        "--until", metavar="WHEN", help="before this instant (or date, meaning 00:00 UTC)"
    )
    _paging(statement)
    statement.set_defaults(handler=cmd_statement)

    reciprocity = commands.add_parser(
        "reciprocity",
        help="what a community gave and received, per community",
        description="What a community gave to and received from each other community, "
        "valued in the federation's reference unit, over the UTC days [--from, --to) or all "
        "time; its net position and credit line. The index runs from -1 (only receives) to "
        "+1 (only gives).",
    )
    reciprocity.add_argument(
        "community", metavar="COMMUNITY", help="community slug, e.g. riverbend"
    )
    reciprocity.add_argument("--from", dest="since", metavar="DAY", help="first day counted")
    reciprocity.add_argument("--to", dest="until", metavar="DAY", help="first day not counted")
    reciprocity.add_argument(
        "--json",
        action="store_true",
        help="print JSON for scripts (amounts in minor units of the reference unit)",
    )
    reciprocity.set_defaults(handler=cmd_reciprocity)
