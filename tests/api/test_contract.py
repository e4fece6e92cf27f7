"""The contract is real: openapi.yaml is what the app serves, and the app keeps it.

Schemathesis generates requests from the served schema for every operation, on both
databases, with a federation key, and checks that no answer is a 5xx and every answer
(problems included) conforms to the documented status codes, content types and schemas.
"""

from __future__ import annotations

import json
from pathlib import Path

import schemathesis
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from api.openapi import document
from tests.api.conftest import Federation

OPENAPI_YAML = Path(__file__).resolve().parents[2] / "openapi.yaml"


def test_openapi_yaml_equals_the_served_schema(client: TestClient) -> None:
    published = yaml.safe_load(OPENAPI_YAML.read_text(encoding="utf-8"))
    served = client.get("/openapi.json").json()
    assert published == served, (
        "openapi.yaml drifted from the app: run `make openapi` and review the diff"
    )
    assert json.loads(json.dumps(document())) == served


def _documented(spec: dict[str, object]) -> bool:
    """A field says what it is; a scalar field also shows an example."""
    if "$ref" in spec:  # described by the schema it points at
        return True
    structured = "$ref" in str(spec.get("anyOf", "")) or spec.get("type") in ("object", "array")
    scalar = not structured and "items" not in spec
    return "description" in spec and (not scalar or "examples" in spec or "example" in spec)


def test_every_field_is_described_with_an_example(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    undocumented = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        if name
        not in (
            "HTTPValidationError",
            "ValidationError",
        )  # FastAPI's, never served: ours is Problem
        for field, spec in schema.get("properties", {}).items()
        if not _documented(spec)
    ]
    assert undocumented == []


# Loaded from the app's own document (the drift test above ties it to openapi.yaml), and
# called through the test client on each database: schemathesis's fixture loader does not
# work with pytest 9 yet.
schema = schemathesis.openapi.from_dict(document())
# The checks that judge one response. Those that send more requests on their own
# (ignored_auth, use_after_free, …) need a live server; test_server.py has one.
RESPONSE_CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_contract(
    case: schemathesis.Case, client: TestClient, federation: Federation
) -> None:
    headers = federation.keys["federation"]
    request = case.as_transport_kwargs(headers=headers)
    request.pop("cookies", None)  # the API uses none; httpx deprecates per-request cookies
    if isinstance(request.get("data"), bytes | str):  # requests' name for a raw body
        request["content"] = request.pop("data")
    response = client.request(**request)
    assert response.status_code < 500, response.text
    case.validate_response(response, headers=headers, checks=RESPONSE_CHECKS)
