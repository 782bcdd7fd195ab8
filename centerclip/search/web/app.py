"""The search service's HTTP API and page, as an ASGI app with no Ray in it: pipelines/serve.py
runs it in a Ray Serve deployment, which embeds queries (``embed``) in the same replica.

Requests name rows by id only (32 hex digits); files and thumbnails are looked up in the table,
so no request can name a path. Without a token the app answers loopback clients only; with one,
every request must carry it (``Authorization: Bearer``, or the cookie set by opening ``/?token=``).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import urlencode

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from lancedb.expr import col, lit
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..searcher import Result, Searcher
from ...index.keys import KEY_PATTERN
from ...index.schema import KINDS, THUMBNAIL
from ...index.store import Store
from ...media.sources import display_name
from ...media.stores import StoreError
from ...media.thumbnails import placeholder
from .access import host_of, is_loopback
from .media import media_response, open_uri, sniffed_type

MAX_QUERY = 1000  # characters; the text tower reads about 77 tokens anyway
MAX_K = 100
DEFAULT_K = 12
TOKEN_COOKIE = "centerclip_token"
_ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
           "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/static/style.css": ("style.css", "text/css; charset=utf-8")}
# The page loads nothing from anywhere else: it works offline and injected markup cannot call out.
_PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
                "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class BadRequest(HTTPException):
    def __init__(self, detail: str):
        super().__init__(400, detail)


class Catalog:
    """What the service reads from a store: searches (centerclip.search.searcher.Searcher, by vector) and
    rows by id."""

    def __init__(self, store: Store):
        self.store = store
        self.searcher = Searcher(store, None)

    def row(self, row_id: str, columns: list[str]) -> dict | None:
        """The row with this id (None for an unknown or malformed id); columns the table lacks
        (a thumbnail in a table from before thumbnails) come back as None."""
        if not KEY_PATTERN.fullmatch(row_id):
            return None
        present = [name for name in columns if name in self.store.videos.schema.names]
        hits = self.store.videos.search().where(col("id") == lit(row_id)).select(present).limit(1).to_arrow()
        return {name: hits.column(name)[0].as_py() if name in present else None for name in columns} if len(hits) else None


def result_json(result: Result) -> dict:
    return {"video_id": result.video_id, "uri": result.uri, "name": display_name(result.uri), "score": round(result.score, 4), "start": result.start,
            "end": result.end, "thumbnail": f"/api/thumbnail/{result.row_id}", "media": f"/api/media/{result.video_id}"}


def _k(request: Request) -> int:
    text = request.query_params.get("k", str(DEFAULT_K))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_K:
        raise BadRequest(f"k must be a whole number from 1 to {MAX_K}, got {text[:20]!r}")
    return int(text)


def _where(request: Request) -> dict[str, str]:
    kind = request.query_params.get("kind", "")
    if kind and kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)} (or absent for both), got {kind[:20]!r}")
    where = {"kind": kind} if kind else {}
    uri = request.query_params.get("uri", "")
    if uri:  # one file's rows: the uri exactly as the API returned it (an object's key as the store holds it)
        if len(uri) > 4096:
            raise BadRequest("uri is longer than 4,096 characters")
        where["uri"] = uri
    return where


class Guard:
    """ASGI middleware in front of every route: without a token, loopback clients of a local host
    name only; with one, every request carries it (header, cookie, or ``?token=`` on the page,
    moved into a cookie). Every answer says ``nosniff``. Plain ASGI rather than
    ``@app.middleware``, which runs each request through extra tasks and streams."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
            await send(message)

        refusal = self.refusal(Request(scope))
        await (refusal or self.app)(scope, receive, send_nosniff)

    def refusal(self, request: Request) -> Response | None:
        """The answer to a request that may not reach the app, or None."""
        if self.token is None:
            # Loopback only, by peer and by Host header (a page on another site cannot rebind a
            # name to 127.0.0.1 and read answers meant for this machine).
            host = host_of(request.headers.get("host") or "")
            if not (request.client and is_loopback(request.client.host) and is_loopback(host)):
                return JSONResponse({"error": "this server has no token, so it answers only on loopback "
                                              "(127.0.0.0/8, ::1, localhost)"}, status_code=403)
            return None
        authorization = request.headers.get("authorization", "")
        supplied = (authorization[7:] if authorization.lower().startswith("bearer ") else
                    request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE, ""))
        if not hmac.compare_digest(supplied.encode(), self.token.encode()):
            return JSONResponse({"error": "missing or wrong token: send 'Authorization: Bearer TOKEN', "
                                          "or open /?token=TOKEN in the browser once"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if request.url.path == "/" and "token" in request.query_params:  # a link: keep it in a cookie, not in the address bar
            rest = urlencode([(key, value) for key, value in request.query_params.multi_items() if key != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            return response
        return None


def create_app(store: Store, embed: Callable[[str], Awaitable[np.ndarray]], *, token: str | None = None) -> FastAPI:
    """The app over ``store``; ``embed`` turns a query into its vector (the model that indexed the table)."""
    catalog = Catalog(store)
    assets = {path: ((resources.files(__package__) / "static" / name).read_bytes(), kind)
              for path, (name, kind) in _ASSETS.items()}
    # No generated docs: they would load scripts from a CDN and describe less than the README.
    app = FastAPI(title="centerclip", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def json_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    app.add_middleware(Guard, token=token)

    def asset(path: str) -> Response:
        body, kind = assets[path]
        return Response(body, media_type=kind, headers={"Content-Security-Policy": _PAGE_POLICY,
                                                         "Cache-Control": "no-cache"})

    # HEAD as GET without the body, as players and download managers send it before a Range.
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> Response:
        return asset("/")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(name: str) -> Response:
        if f"/static/{name}" not in assets:
            raise HTTPException(404, "not found")
        return asset(f"/static/{name}")

    @app.get("/api/health")
    async def health() -> dict:
        rows = await run_in_threadpool(store.count)
        return {"status": "ok", "rows": rows}

    async def ranked(vector: np.ndarray, k: int, where: dict, exclude: str | None, started: float) -> dict:
        results = await run_in_threadpool(catalog.searcher.similar, vector, k, exclude, where)
        return {"results": [result_json(result) for result in results],
                "took_ms": round((time.perf_counter() - started) * 1000, 1)}

    @app.get("/api/search")
    async def search(request: Request) -> dict:
        started = time.perf_counter()
        query = request.query_params.get("q", "").strip()
        if not query:
            raise BadRequest("the query is empty: say what to look for, e.g. q=a red circle moves left")
        if len(query) > MAX_QUERY:
            raise BadRequest(f"the query is {len(query)} characters long; at most {MAX_QUERY} are allowed")
        k, where = _k(request), _where(request)
        return await ranked(np.asarray(await embed(query)), k, where, None, started)

    @app.get("/api/similar")
    async def similar(request: Request) -> dict:
        started = time.perf_counter()
        row_id = request.query_params.get("id", "")
        k, where = _k(request), _where(request)
        row = await run_in_threadpool(catalog.row, row_id, ["vector", "video_id"])
        if row is None:
            raise HTTPException(404, f"no indexed video or moment has the id {row_id[:40]!r}")
        return await ranked(np.asarray(row["vector"], np.float32), k, where, row["video_id"], started)

    @app.api_route("/api/thumbnail/{row_id}", methods=["GET", "HEAD"])
    async def thumbnail(row_id: str) -> Response:
        row = await run_in_threadpool(catalog.row, row_id, [THUMBNAIL.name])
        if row is None:
            raise HTTPException(404, "no such row")
        if row[THUMBNAIL.name]:
            return Response(row[THUMBNAIL.name], media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
        return Response(placeholder(), media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @app.api_route("/api/media/{row_id}", methods=["GET", "HEAD"])
    async def media(row_id: str, request: Request) -> Response:
        row = await run_in_threadpool(catalog.row, row_id, ["uri"])
        if row is None:
            raise HTTPException(404, "no such row")
        try:
            found = await run_in_threadpool(open_uri, row["uri"])
            kind = await run_in_threadpool(sniffed_type, row["uri"], found)
        except StoreError as error:  # the store is there but will not serve it (credentials, endpoint)
            raise HTTPException(502, f"the store could not serve the file: {error}") from None
        except OSError:  # gone (FileNotFoundError) or unreadable
            raise HTTPException(404, "the indexed file is no longer there; re-index to update the table") from None
        return media_response(found, kind, request.headers, {"Cache-Control": "private, max-age=3600"})

    return app
