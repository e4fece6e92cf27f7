"""The front door: ``/``, and the interactive docs with no internet.

FastAPI's own ``/docs`` and ``/redoc`` pages load Swagger UI and ReDoc from a CDN, so on a
laptop offline (or a community's server behind a strict firewall) they show a blank page.
Here the same pages load their scripts, styles and icon from the app itself, under
``/docs/static/``, out of the installed ``fastapi-offline`` package (which ships
Swagger UI's and ReDoc's bundles; only its files are used, not its app factory).

``install(app)`` adds these routes to an app created with ``docs_url=None, redoc_url=None``.
None of them is in the OpenAPI document: they are pages for people, not operations.
"""

from __future__ import annotations

import html
from importlib import metadata

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
STATIC_URL = "/docs/static"
ASSETS_PACKAGE = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, …

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    """The prefix a proxy serves the app under (``--root-path``), so links keep working."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _openapi_url(request: Request) -> str:
    return _root(request) + (request.app.openapi_url or "/openapi.json")


def _version() -> str:
    try:
        return metadata.version("heartleaf")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "unknown"


@router.get("/", response_class=HTMLResponse)
def front_page(request: Request) -> HTMLResponse:
    """What this server is and where to go next."""
    root = _root(request)
    links = [
        (f"{root}{DOCS_URL}", "Interactive API docs", "try every call with your key (Swagger UI)"),
        (f"{root}{REDOC_URL}", "API reference", "the same contract, for reading (ReDoc)"),
        (_openapi_url(request), "OpenAPI document", "the contract as JSON, for code generators"),
        (f"{root}/healthz", "/healthz", "the process is alive"),
        (f"{root}/readyz", "/readyz", "the database answers and its schema is current"),
    ]
    items = "\n".join(
        f'    <li><a href="{html.escape(url)}">{html.escape(label)}</a> — {html.escape(what)}</li>'
        for url, label, what in links
    )
    title = html.escape(request.app.title)
    body = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" href="{root}{STATIC_URL}/favicon.png">
  <style>
    body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto;
           padding: 0 1rem; line-height: 1.5; color: #1f2a1f; }}
    h1 {{ margin-bottom: 0.2rem; }}
    .version, .later {{ color: #5b665b; }}
  </style>
</head>
<body>
  <h1>{title}</h1>
  <p class="version">version {html.escape(_version())}, API {html.escape(request.app.version)}</p>
  <p>The shared ledger of a federation of communities that run two complementary
  currencies: Hearts (♡) for care work and Leaves (🍃) for ecological work. Treasurers
  post transfers, communities read their balances and reciprocity, and the federation
  sets how currencies convert, all through the REST API under <code>{root}/v1</code>,
  authenticated with <code>Authorization: Bearer &lt;key&gt;</code>.</p>
  <ul>
{items}
  </ul>
  <p>From a shell, <code>heartleaf --help</code> lists the commands: balances, statements
  and reciprocity for a treasurer, keys and checks for an operator.</p>
  <p class="later">A web view for treasurers and members comes later; until then, the
  API and the <code>heartleaf</code> command are the ways in.</p>
</body>
</html>
"""
    return HTMLResponse(body)


@router.get(DOCS_URL, response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        swagger_ui_parameters=request.app.swagger_ui_parameters,
    )


@router.get(OAUTH2_REDIRECT_URL, response_class=HTMLResponse)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL, response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        with_google_fonts=False,  # the fonts come from Google: the page's own fonts do
    )


def install(app: FastAPI) -> None:
    """Serve ``/``, ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and their assets."""
    assert app.docs_url is None, "FastAPI's own /docs loads from a CDN: create the app without it"
    assert app.redoc_url is None, "FastAPI's own /redoc loads from a CDN: create it without"
    app.mount(STATIC_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-static")
    app.include_router(router)
