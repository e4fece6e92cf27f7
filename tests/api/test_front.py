"""The front door and the docs: `/` says where to go, `/docs` and `/redoc` load offline.

Every asset the docs pages name is on the app's own host and served by it: nothing comes
from a CDN, so the pages work on a laptop with no internet.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

BASE = "http://testserver"
# Where an HTML page names something to load or follow: attributes, and Swagger UI's `url:`.
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|\burl:\s*'([^']+)'""")


def _references(page: str) -> list[str]:
    return [first or second for first, second in REFERENCE.findall(page)]


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_load_every_asset_from_the_app_itself(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    references = _references(response.text)
    assert any(reference.endswith(".js") for reference in references), references
    assert "/openapi.json" in references
    for reference in references:
        absolute = urljoin(f"{BASE}{path}", reference)
        assert urlsplit(absolute).netloc == "testserver", f"{reference} is off-host"
        fetched = client.get(absolute)
        assert fetched.status_code == 200, f"{reference}: {fetched.status_code}"
        assert fetched.content, reference
    assert "https://" not in response.text.replace("https://testserver", "")
    assert "cdn" not in response.text.lower()


def test_the_assets_are_the_real_bundles(client: TestClient) -> None:
    script = client.get("/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "SwaggerUIBundle" in script.text
    assert client.get("/docs/static/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert "Redoc" in client.get("/docs/static/redoc.standalone.js").text
    assert client.get("/docs/static/nothing-here.js").status_code == 404


def test_the_oauth2_redirect_page_is_served(client: TestClient) -> None:
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "oauth2" in response.text.lower()


def test_the_front_page_says_what_heartleaf_is_and_where_to_go(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "Heartleaf" in page
    assert "Hearts" in page
    assert "Leaves" in page
    assert "web view" in page
    links = set(_references(page))
    assert {"/docs", "/redoc", "/openapi.json", "/healthz", "/readyz"} <= links
    for link in links:
        assert urlsplit(urljoin(BASE, link)).netloc == "testserver", link
        assert client.get(link).status_code == 200, link


def test_pages_for_people_stay_out_of_the_contract(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/", "/docs", "/docs/oauth2-redirect", "/redoc"):
        assert path not in paths
    assert not any(path.startswith("/docs/static") for path in paths)
