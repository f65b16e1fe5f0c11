"""A raw SMTP client for tests: sends exactly the bytes a test gives, reads replies.

smtplib and aiosmtplib fix line endings and dot-stuff, which is what the abuse tests must
not do; this client does nothing behind the test's back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Resp:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str:
        first = self.lines[0] if self.lines else ""
        return first.split(" ", 1)[0] if first[:1].isdigit() else ""

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawSmtp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.banner: Resp | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, timeout: float = 10, source: str | None = None
    ) -> RawSmtp:
        local_addr = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local_addr), timeout
        )
        client = cls(reader, writer)
        client.banner = await client.read_reply(timeout)
        return client

    async def read_reply(self, timeout: float = 10) -> Resp:
        lines: list[str] = []
        code = 0
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                if lines:
                    break
                raise ConnectionError("connection closed before a reply")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            code = int(line[:3])
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                break
        return Resp(code, tuple(lines))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes, timeout: float = 10) -> Resp:
        data = line if isinstance(line, bytes) else line.encode()
        await self.send(data + b"\r\n")
        return await self.read_reply(timeout)

    async def starttls(self) -> Resp:
        resp = await self.cmd("STARTTLS")
        if resp.code == 220:
            await self.writer.start_tls(insecure_context())
        return resp

    async def login(self, user: str, password: str, helo: str = "crm.test") -> None:
        """EHLO, STARTTLS, EHLO, AUTH PLAIN; raises unless every step succeeds."""
        assert (await self.cmd(f"EHLO {helo}")).code == 250
        assert (await self.starttls()).code == 220
        assert (await self.cmd(f"EHLO {helo}")).code == 250
        resp = await self.auth_plain(user, password)
        assert resp.code == 235, resp

    async def auth_plain(self, user: str, password: str) -> Resp:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {token}")

    async def data(self, payload: bytes, timeout: float = 30) -> Resp:
        """Send DATA and ``payload`` verbatim; the payload must include the final CRLF.CRLF."""
        resp = await self.cmd("DATA")
        if resp.code != 354:
            return resp
        await self.send(payload)
        return await self.read_reply(timeout)

    async def close(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.writer.drain(), 2)
        except (ConnectionError, OSError, TimeoutError):
            pass
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
