"""The admin API's HTTP edge: routes built from ``ENDPOINTS``, access control, errors.

``AdminApi.routes()`` gives one Starlette route per path of the endpoint table
(``admin/endpoints.py``), ``/api/openapi.json``, and a JSON 404 for every other ``/api``
path. A request is answered in four steps: access (loopback only unless
``http.admin_allow_remote``; a bearer token from ``mailgate admin token create``, checked
by ``admin/tokens.py``; an endpoint marked ``dealer_link`` also admits a dealer's
status-link token, for that dealer and from any client, as the status page does),
parsing (query parameters typed by the endpoint's ``Param``s, the body validated by its
model; a ``bounded`` endpoint's body read no further than ``max_body``), the handler
(``admin/handlers.py``), and the answer: the handler's JSON, or ``{"error": "...",
"status": N}`` for an ``AdminError`` (its status) or a ``StorageError`` (503).
Nothing an operator sends produces another 5xx.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import Receive, Scope, Send

from gateway.admin.bodies import PATTERN_WORDS
from gateway.admin.endpoints import ENDPOINTS, JSON_TYPE, Endpoint, openapi
from gateway.admin.handlers import Call
from gateway.admin.ops import AdminError, AdminOps, InvalidRequest
from gateway.admin.tokens import TokenCheck
from gateway.errors import StorageError
from gateway.metrics import Metrics

__all__ = ["ENDPOINTS", "AdminApi", "error"]

log = logging.getLogger("gateway.admin")


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON error answer."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class AdminApi:
    """The routes of the admin API over ``ops``."""

    ops: AdminOps
    tokens: TokenCheck
    allow_remote: bool = False
    metrics: Metrics | None = None
    # Whether a token is the named dealer's status-link token (web/status.py StatusLinks.valid):
    # endpoints marked ``dealer_link`` admit it, for that dealer only, from any client.
    dealer_links: Callable[[str, str], bool] | None = None
    max_body: int = 64 * 1024 * 1024  # the most a ``bounded`` endpoint reads (413 beyond)
    _spec: dict[str, Any] = field(default_factory=openapi)

    def _count(self, status: int) -> None:
        if self.metrics is None:
            return
        if status < 400:
            result = "ok"
        elif status in (401, 403):
            result = "unauthorized"
        elif status >= 500:
            result = "unavailable"
        else:
            result = "client-error"
        self.metrics.admin_requests.labels(result).inc()

    def routes(self) -> list[BaseRoute]:
        """One route per path, then a JSON 404 for every other ``/api`` path."""
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in ENDPOINTS:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        # Every method reaches our dispatcher, so that a method the description does not
        # list gets our JSON 405 with ``Allow`` naming exactly the documented methods (RFC
        # 9110 §15.5.6), never Starlette's plain-text one naming what the route accepts.
        routes: list[BaseRoute] = [Route("/api/openapi.json", self._openapi, methods=["GET"])]
        for path, methods in by_path.items():
            routes.append(Route(path, _EveryMethod(self._dispatcher(methods))))
        routes.append(Route("/api", _EveryMethod(self._unknown)))
        routes.append(Route("/api/{rest:path}", _EveryMethod(self._unknown)))
        return routes

    async def _openapi(self, _request: Request) -> Response:
        return JSONResponse(self._spec)

    async def _unknown(self, request: Request) -> Response:
        denied = await self._access(request)
        if denied is not None:
            self._count(denied.status_code)
            return denied
        self._count(404)
        return error(404, f"no such endpoint: {request.url.path} (see GET /api/openapi.json)")

    def _dealer_link(self, request: Request, ep: Endpoint | None) -> bool:
        """Admit a dealer's status-link token on an endpoint that takes one."""
        if ep is None or not ep.dealer_link or self.dealer_links is None:
            return False
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        dealer = request.query_params.get("dealer", "")
        if scheme.lower() != "bearer" or not token.strip() or not dealer:
            return False
        if not self.dealer_links(dealer, token.strip()):
            return False
        request.state.actor = f"status link of {dealer}"
        request.state.dealer = dealer
        return True

    async def _access(self, request: Request, ep: Endpoint | None = None) -> JSONResponse | None:
        """Refuse remote clients and missing or unknown tokens (a dealer link where allowed)."""
        if self._dealer_link(request, ep):
            return None
        host = request.client.host if request.client else None
        if not self.allow_remote and not _loopback(host):
            return error(
                403,
                "the admin API answers loopback clients only; run the command on the gateway "
                "host or set http.admin_allow_remote = true",
            )
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="mailgate"'}
        if scheme.lower() != "bearer" or not token.strip():
            if not self.tokens.configured:
                return error(
                    401, "no admin tokens exist yet: run `mailgate admin token create`", challenge
                )
            return error(
                401,
                "send Authorization: Bearer <token> (set MAILGATE_ADMIN_TOKEN for the CLI; "
                "create one with `mailgate admin token create`)",
                challenge,
            )
        name = await self.tokens.check(token.strip())
        if name is None:
            return error(401, "unknown or revoked token", challenge)
        request.state.actor = name
        return None

    def _dispatcher(
        self, methods: Mapping[str, Endpoint]
    ) -> Callable[[Request], Awaitable[Response]]:
        allowed = ", ".join(sorted(methods))

        async def dispatch(request: Request) -> Response:
            response = await answer(request)
            self._count(response.status_code)
            return response

        async def answer(request: Request) -> Response:
            ep = methods.get(request.method)
            denied = await self._access(request, ep)
            if denied is not None:
                return denied
            if ep is None:
                return error(
                    405, f"{request.method} is not allowed here; use {allowed}", {"Allow": allowed}
                )
            try:
                call = await self._parse(request, ep)
                result = await ep.handler(self.ops, call)
            except AdminError as exc:
                return error(exc.status, str(exc))
            except StorageError as exc:
                log.warning("admin API %s %s: store error: %s", ep.method, ep.path, exc)
                return error(503, f"the store is unavailable ({exc}); retry in a moment")
            if isinstance(result, Response):
                return result
            return JSONResponse(result, status_code=ep.status)

        return dispatch

    async def _parse(self, request: Request, ep: Endpoint) -> Call:
        query = {p.name: p.parse(request.query_params.get(p.name)) for p in ep.query}
        raw = await (_bounded_body(request, self.max_body) if ep.bounded else request.body())
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body: BaseModel | None = None
        if ep.body_csv:
            if content_type != "text/csv":
                raise _Unsupported("send the body as text/csv")
        elif ep.body is not None:
            if content_type in ep.raw_types:
                pass
            elif content_type not in ("", JSON_TYPE):
                raise _Unsupported(f"send the body as {JSON_TYPE}")
            else:
                body = _validate(ep.body, raw)
        elif raw.strip() and raw.strip() not in (b"{}", b"null"):
            raise InvalidRequest("this endpoint takes no request body")
        return Call(
            path=dict(request.path_params),
            query=query,
            body=body,
            actor=str(getattr(request.state, "actor", "")),
            raw_body=raw,
            content_type=content_type,
            dealer=str(getattr(request.state, "dealer", "")),
        )


class _Unsupported(AdminError):
    status = 415


class _EveryMethod:
    """A request handler as an ASGI app, which Starlette routes for every method.

    Starlette routes a plain function to ``GET`` and ``HEAD`` unless given ``methods``, and
    answers any other method itself; an app object it routes whatever the method.
    """

    def __init__(self, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self._app = request_response(handle)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class _TooLarge(AdminError):
    status = 413


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (``_TooLarge`` beyond)."""
    too_large = _TooLarge(f"the body is larger than {limit} bytes, the most this endpoint reads")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _validate(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        # JSON may escape lone surrogates ("\\ud800"), which no store can hold as text.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("the body is not valid Unicode (a lone surrogate)") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "body"
            message = err["msg"]
            if err["type"] == "string_pattern_mismatch":
                words = PATTERN_WORDS.get(str(err.get("ctx", {}).get("pattern")))
                if words is not None:  # name the value, then say what it should be
                    problems.append(f"{where} {err['input']!r}: {words}")
                    continue
            elif err["type"] == "literal_error":
                expected = str(err.get("ctx", {}).get("expected", "")).replace("'", "")
                problems.append(f"{where} {err['input']!r} is not one of {expected}")
                continue
            problems.append(f"{where}: {message}")
        raise InvalidRequest("; ".join(problems)) from None
