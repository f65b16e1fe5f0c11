"""A small client of the admin API for the CLI (stdlib ``http.client``, synchronous).

The base URL comes from ``--api``, ``MAILGATE_API_URL`` or the settings' ``http.listen``;
the token from ``MAILGATE_ADMIN_TOKEN``, or a file named by ``--token-file`` or
``MAILGATE_ADMIN_TOKEN_FILE``. Every failure becomes an ``ApiError`` whose message says
what to do, with the exit code the CLI should return (``common.exit_code`` of its status,
the same code an offline command gives for the same refusal).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_AUTH, EXIT_FAIL, EXIT_UNAVAILABLE, EXIT_USAGE, exit_code
from gateway.errors import GatewayError
from gateway.settings import Settings, parse_hostport


class ApiError(GatewayError):
    """A request failed; ``exit_code`` is what the CLI returns."""

    def __init__(self, message: str, status: int = 0, exit_code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code


def base_url(settings: Settings, explicit: str | None = None) -> str:
    """The API's base URL: ``explicit``, ``MAILGATE_API_URL``, or from ``http.listen``."""
    url = explicit or os.environ.get("MAILGATE_API_URL", "")
    if url:
        return url.rstrip("/")
    host, port = parse_hostport(settings.http.listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def read_token(token_file: Path | None = None) -> str:
    """The token from ``MAILGATE_ADMIN_TOKEN`` or a token file; raises ``ApiError``."""
    token = os.environ.get("MAILGATE_ADMIN_TOKEN", "").strip()
    if token:
        return token
    path = token_file or (
        Path(os.environ["MAILGATE_ADMIN_TOKEN_FILE"])
        if os.environ.get("MAILGATE_ADMIN_TOKEN_FILE")
        else None
    )
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiError(
                f"cannot read the token file {path}: {exc.strerror or exc}", exit_code=EXIT_USAGE
            ) from exc
    raise ApiError(
        "no admin token: set MAILGATE_ADMIN_TOKEN (or MAILGATE_ADMIN_TOKEN_FILE / --token-file); "
        "create one on the gateway host with `mailgate admin token create`",
        exit_code=EXIT_AUTH,
    )


@dataclass
class ApiClient:
    """Requests against one gateway's admin API."""

    url: str
    token: str
    timeout: float = 60.0

    def _connection(self) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or "127.0.0.1"
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, parts.port or 443, timeout=self.timeout)
        if parts.scheme != "http":
            raise ApiError(f"API URL must be http:// or https://: {self.url}", exit_code=EXIT_USAGE)
        return http.client.HTTPConnection(host, parts.port or 80, timeout=self.timeout)

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: bytes | None,
        content_type: str,
    ) -> http.client.HTTPResponse:
        if query:
            clean = {
                k: ("true" if v is True else "false" if v is False else str(v))
                for k, v in query.items()
                if v is not None and v != ""
            }
            if clean:
                path += "?" + urllib.parse.urlencode(clean)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        connection = self._connection()
        try:
            connection.request(method, path, body=body, headers=headers)
            return connection.getresponse()
        except OSError as exc:  # refused, reset, timed out
            connection.close()
            raise ApiError(
                f"cannot reach the gateway's admin API at {self.url} ({exc}); is `mailgate "
                "serve` running? Use --api URL or MAILGATE_API_URL if it listens elsewhere",
                exit_code=EXIT_UNAVAILABLE,
            ) from exc

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (),
    ) -> Any:
        """Send a request and return the decoded JSON answer; raises ``ApiError``.

        Statuses in ``ok`` are returned like a success (e.g. 422 from a policy reload).
        """
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = self._send(method, path, query, data, content_type)
        with response:
            payload = response.read()
        try:
            decoded = json.loads(payload) if payload else {}
        except ValueError:
            decoded = {"error": payload.decode("utf-8", "replace")[:500]}
        if response.status >= 400 and response.status not in ok:
            raise _error(response.status, decoded)
        return decoded

    def stream(self, path: str, query: Mapping[str, Any] | None = None) -> Iterator[bytes]:
        """The body of a GET, chunk by chunk (CSV exports)."""
        response = self._send("GET", path, query, None, "")
        with response:
            if response.status >= 400:
                payload = response.read()
                try:
                    decoded = json.loads(payload)
                except ValueError:
                    decoded = {}
                raise _error(response.status, decoded)
            while chunk := response.read(65536):
                yield chunk


def _error(status: int, decoded: Any) -> ApiError:
    message = decoded.get("error") if isinstance(decoded, dict) else None
    message = str(message or f"HTTP {status}")
    code = exit_code(status)
    if code == EXIT_AUTH:
        message = f"access refused: {message}"
    elif code == EXIT_UNAVAILABLE:
        message = f"the gateway could not do it now: {message}"
    return ApiError(message, status, code)
