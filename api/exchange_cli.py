"""``heartleaf exchange``: the federation's exchange settings from a shell.

The same operations as the API's valuation, protocol and governance endpoints, on the
database that ``DATABASE_URL`` names: list the valuations and protocols in force, value a
currency, suspend or resume a pair in an emergency, list the proposals waiting for
approval and reject one. Each change is recorded with who made it (``--by``, by default
``cli:$USER``) and why (``--reason``, required).

The shell proposes as the *operator*: a change applies at once only when the federation
asks for no approvals, otherwise it waits like any other. Approvals come from API keys
only (``POST /v1/governance/proposals/{id}/approve``): ``--by`` is whatever the shell
says, so it never counts as one. Rejecting keeps the policy as it is and is allowed.

Errors print as one line (``heartleaf: error: …``) with exit status 2, as in every other
command: refusals of the exchange arrive as ``LedgerError`` and ``api/cli.py``'s ``main``
prints them; the refusals found here (a rate or an instant that does not parse, a schema
behind the migrations) print the same way from ``_one_line`` or ``main``. Tables go to
stdout, what a change did to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from api.cli_database import help_of, ready_engine
from exchange import rates
from exchange.model import Proposal, ProtocolVersion, Signatory
from exchange.service import Exchange
from ledger.errors import Code, LedgerError

Handler = Callable[[argparse.Namespace], int]


class _CommandLineError(Exception):
    """A mistake in the command line, worth one line to the user."""


def _one_line(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _CommandLineError as error:
            print(f"heartleaf: error: {error}", file=sys.stderr)
            return 2

    return run


def _exchange() -> Exchange:
    from api.app import build_ledger  # noqa: PLC0415 - FastAPI loads only when needed

    # A missing or unmigrated database is refused by name (api/cli_database.py).
    return Exchange(build_ledger(ready_engine()))


def _who() -> str:
    return "cli:" + (os.environ.get("USER") or os.environ.get("LOGNAME") or "operator")


def _operator(args: argparse.Namespace) -> Signatory:
    return Signatory(args.by, "operator")


def _waiting(proposal: Proposal) -> str:
    return (
        f"proposed as proposal {proposal.id}: in force once {proposal.approvals_required} "
        f"approval(s) arrive, by {_when(proposal.expires_at)} UTC"
    )


def _rate(text: str) -> Any:
    try:
        return rates.parse_rate(text)
    except ValueError as error:
        raise _CommandLineError(f"{text!r} is not a rate such as 0.045 or 9/200") from error


def _instant(text: str) -> dt.datetime:
    try:
        instant = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise _CommandLineError(f"{text!r} is not an instant like 2026-12-01T00:00:00Z") from error
    if instant.tzinfo is None:
        raise _CommandLineError(f"{text!r} has no offset: add Z or +01:00")
    return instant.astimezone(dt.UTC)


def _when(instant: dt.datetime | None) -> str:
    return "-" if instant is None else f"{instant.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


# -- commands -----------------------------------------------------------------------------------


@_one_line
def cmd_valuations(args: argparse.Namespace) -> int:
    exchange = _exchange()
    unit = exchange.settings().reference_unit
    print(f"{'currency':<10} {'in ' + unit:>22}  {'since (UTC)':<19}  {'by':<16} reason")
    for currency in exchange.ledger.list_currencies():
        try:
            valuation = exchange.valuation_at(currency.code)
        except LedgerError as error:
            if error.code != Code.VALUATION_MISSING:
                raise
            print(f"{currency.code:<10} {'-':>22}  {'-':<19}  {'-':<16} no valuation")
            continue
        print(
            f"{currency.code:<10} {rates.format_rate(valuation.rate):>22}  "
            f"{_when(valuation.effective_from):<19}  {valuation.recorded_by:<16} "
            f"{valuation.reason}"
        )
    return 0


@_one_line
def cmd_set_valuation(args: argparse.Namespace) -> int:
    rate = _rate(args.rate)
    start = None if args.effective_from is None else _instant(args.effective_from)
    exchange = _exchange()
    outcome = exchange.set_valuation(
        args.code, rate, by=_operator(args), reason=args.reason, effective_from=start
    )
    unit = exchange.settings().reference_unit
    if isinstance(outcome, Proposal):
        print(f"1 {args.code} = {args.rate} {unit}: {_waiting(outcome)}", file=sys.stderr)
        return 0
    print(
        f"1 {outcome.currency} = {rates.format_rate(outcome.rate)} {unit} "
        f"from {_when(outcome.effective_from)} UTC (recorded by {outcome.recorded_by})",
        file=sys.stderr,
    )
    return 0


@_one_line
def cmd_proposals(args: argparse.Namespace) -> int:
    exchange = _exchange()
    state = None if args.state == "all" else args.state
    print(
        f"{'id':>5}  {'kind':<17} {'subject':<14} {'state':<8} {'approvals':<9}  "
        f"{'proposed by':<16} {'expires (UTC)':<19}  reason"
    )
    for proposal in exchange.proposals(state=state, limit=args.limit):
        counted = f"{proposal.approvals_counted}/{proposal.approvals_required}"
        print(
            f"{proposal.id:>5}  {proposal.kind:<17} {proposal.subject:<14} "
            f"{proposal.state:<8} {counted:<9}  {proposal.proposed_by:<16} "
            f"{_when(proposal.expires_at):<19}  {proposal.reason}"
        )
    return 0


@_one_line
def cmd_reject(args: argparse.Namespace) -> int:
    proposal = _exchange().reject_proposal(args.proposal_id, by=_operator(args), reason=args.reason)
    print(f"proposal {proposal.id} ({proposal.kind} {proposal.subject}) rejected", file=sys.stderr)
    return 0


def _status(version: ProtocolVersion | None, newest: ProtocolVersion, now: dt.datetime) -> str:
    if version is None:
        return "not yet in force" if newest.state == "active" else "awaiting approval"
    if not version.spec.allowed:
        return "forbidden"
    if version.spec.suspended:
        return "suspended"
    if version.spec.effective_until is not None and version.spec.effective_until <= now:
        return "ended"
    return "open"


def _eligible(version: ProtocolVersion) -> str:
    spec = version.spec
    parts = [*(str(t) for t in spec.eligible_account_types or ())]
    parts += [f"#{account}" for account in spec.eligible_account_ids or ()]
    return ",".join(parts) if parts else "all"


@_one_line
def cmd_protocols(args: argparse.Namespace) -> int:
    exchange = _exchange()
    now = exchange.clock()
    print(
        f"{'pair':<16} {'in force':<8} {'newest':<16} {'status':<17} {'rate':<12} "
        f"{'fee bps':>7}  {'who':<12} limits"
    )
    for newest in exchange.protocols():
        spec = newest.spec
        in_force = exchange.protocol_in_force(spec.from_currency, spec.to_currency, now)
        shown = in_force or newest
        limits = ", ".join(f"{name} {value}" for name, value in shown.spec.limits.items()) or "-"
        rate = (
            "valuations"
            if shown.spec.fixed_rate is None
            else rates.format_rate(shown.spec.fixed_rate)
        )
        print(
            f"{spec.from_currency + ' -> ' + spec.to_currency:<16} "
            f"{'v' + str(in_force.version) if in_force else '-':<8} "
            f"{'v' + str(newest.version) + ' ' + newest.state:<16} "
            f"{_status(in_force, newest, now):<17} {rate:<12} {shown.spec.fee_bps:>7}  "
            f"{_eligible(shown):<12} {limits}"
        )
    return 0


@_one_line
def cmd_suspend(args: argparse.Namespace) -> int:
    version = _exchange().suspend(
        args.from_currency, args.to_currency, by=_operator(args), reason=args.reason
    )
    print(
        f"{args.from_currency} -> {args.to_currency} suspended (version {version.version}, "
        f"in force from {_when(version.activated_at)} UTC)",
        file=sys.stderr,
    )
    return 0


@_one_line
def cmd_resume(args: argparse.Namespace) -> int:
    version = _exchange().resume(
        args.from_currency, args.to_currency, by=_operator(args), reason=args.reason
    )
    if version.state == "active":
        told = f"resumed (version {version.version})"
    else:
        told = (
            f"resumption proposed as version {version.version} (proposal "
            f"{version.proposal_id}): in force once approved with API keys"
        )
    print(f"{args.from_currency} -> {args.to_currency} {told}", file=sys.stderr)
    return 0


# -- the parser ---------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Add ``exchange`` and its commands to the ``heartleaf`` parser's subcommands."""
    exchange = commands.add_parser(
        "exchange",
        help="the federation's valuations and exchange protocols",
        description="List and change the federation's valuations and exchange protocols. "
        "Every change is recorded with who made it (--by) and why (--reason); while the "
        "federation asks for approvals, a change waits for them (approved with API keys).",
    )
    exchange_commands = exchange.add_subparsers(dest="exchange_command", metavar="COMMAND")
    exchange.set_defaults(handler=help_of(exchange))

    def with_author(command: argparse.ArgumentParser) -> None:
        command.add_argument("--reason", required=True, help="why: kept in the history")
        command.add_argument(
            "--by", default=_who(), help="who makes the change (default: cli:$USER)"
        )

    valuations = exchange_commands.add_parser(
        "valuations",
        help="list the valuation of every currency",
        description="The valuation in force now of every currency, in the reference unit.",
    )
    valuations.set_defaults(handler=cmd_valuations)

    set_valuation = exchange_commands.add_parser(
        "set-valuation",
        help="value a currency in the reference unit",
        description="Value one major unit of a currency in the reference unit, from now (or "
        "--effective-from) on. Refused if it would let value grow round a circle of "
        "protocols.",
    )
    set_valuation.add_argument("code", help="currency code, e.g. HRB")
    set_valuation.add_argument("rate", help="exact decimal or fraction, e.g. 0.8 or 9/200")
    set_valuation.add_argument(
        "--effective-from", help="RFC 3339 instant with offset (default: now)"
    )
    with_author(set_valuation)
    set_valuation.set_defaults(handler=cmd_set_valuation)

    protocols = exchange_commands.add_parser(
        "protocols",
        help="list the exchange protocols",
        description="Every pair's protocol: the version in force, the newest version and "
        "its state, the rate (fixed, or from valuations), fee, who may convert, limits.",
    )
    protocols.set_defaults(handler=cmd_protocols)

    proposals = exchange_commands.add_parser(
        "proposals",
        help="list proposed changes of policy",
        description="Proposed changes of policy (settings, valuations, protocol versions, "
        "credit lines), newest first: by default those waiting for approval.",
    )
    proposals.add_argument(
        "--state",
        choices=("pending", "applied", "rejected", "expired", "all"),
        default="pending",
        help="which ones (default: pending)",
    )
    proposals.add_argument("--limit", type=int, default=100, help="at most this many")
    proposals.set_defaults(handler=cmd_proposals)

    reject = exchange_commands.add_parser(
        "reject",
        help="reject a pending proposal",
        description="Reject a pending proposal: it never comes into force.",
    )
    reject.add_argument("proposal_id", type=int, metavar="ID", help="proposal id")
    with_author(reject)
    reject.set_defaults(handler=cmd_reject)

    for name, handler, summary in (
        ("suspend", cmd_suspend, "suspend a pair at once (no approvals needed)"),
        ("resume", cmd_resume, "lift a suspension (approved like any other change)"),
    ):
        command = exchange_commands.add_parser(
            name, help=summary, description=summary[0].upper() + summary[1:] + "."
        )
        command.add_argument("from_currency", metavar="FROM", help="source currency code")
        command.add_argument("to_currency", metavar="TO", help="target currency code")
        with_author(command)
        command.set_defaults(handler=handler)
