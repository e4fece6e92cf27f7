"""Two reversals of one transaction racing on PostgreSQL: one reverses it, the other is
told ``already_reversed``, never the ``insufficient_funds`` the winner left behind."""

from __future__ import annotations

import threading

import pytest

from ledger.errors import Code, LedgerError
from ledger.service import Ledger
from tests.ledger.builders import pay, village

ROUNDS = 6


@pytest.mark.postgres_only
def test_the_losing_reversal_is_told_already_reversed(ledger: Ledger) -> None:
    v = village(ledger)
    for round_ in range(ROUNDS):
        # Bo holds exactly what the payment brought, so a second reversal would overdraw.
        paid = ledger.post_transaction(pay(v.ana, v.bo, 100)).transaction
        assert paid is not None
        gate = threading.Barrier(2)
        answers: list[str] = []
        threads = [
            threading.Thread(
                target=_reverse, args=(ledger, paid.id, f"{n}-{round_}", gate, answers)
            )
            for n in ("first", "second")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(answers) == sorted(["reversed", str(Code.ALREADY_REVERSED)]), answers
        assert ledger.balance(v.bo).posted == 0


def _reverse(
    ledger: Ledger, transaction_id: int, client_id: str, gate: threading.Barrier, answers: list[str]
) -> None:
    gate.wait()
    try:
        ledger.reverse(transaction_id, client_id=client_id)
        answers.append("reversed")
    except LedgerError as error:
        answers.append(str(error.code))
