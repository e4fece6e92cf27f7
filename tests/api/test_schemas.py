"""Request bodies refuse text no database keeps, wherever it is, whoever validates them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from api.schemas import BatchCreate, PostingCreate, storable, unstorable_at

POSTING = {"source_account_id": 1, "destination_account_id": 2, "amount": 5, "currency": "HRB"}

# Text with the characters that matter drawn often: NUL and lone surrogates.
texts = st.text(alphabet=st.sampled_from(["a", "é", "♡", "\x00", "\ud800", "\udfff"]), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)


def _every_text(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(t for child in value.values() for t in _every_text(child))]
    if isinstance(value, list):
        return [t for child in value for t in _every_text(child)]
    return []


@given(json_values)
def test_text_is_refused_exactly_when_some_key_or_string_is_unstorable(value: Any) -> None:
    assert (unstorable_at(value) is None) == all(storable(t) for t in _every_text(value))


def test_a_nested_model_checks_its_text_when_validated_on_its_own() -> None:
    """A body checks the text of the models nested in it once, for them; once it is done,
    the same models validated alone check their own again."""
    BatchCreate.model_validate({"transactions": [{"postings": [POSTING]}]})
    with pytest.raises(ValidationError, match="NUL character"):
        PostingCreate.model_validate({**POSTING, "currency": "H\x00B"})


def test_a_body_names_where_its_nested_text_is_unstorable() -> None:
    body = {
        "transactions": [{"postings": [POSTING]}, {"postings": [{**POSTING, "currency": "\x00"}]}]
    }
    with pytest.raises(ValidationError, match=r"transactions\[1\]\.postings\[0\]\.currency"):
        BatchCreate.model_validate(body)
