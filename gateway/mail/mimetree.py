"""Byte-level MIME structure scanner (pure, iterative, bounded).

This module owns one job: find where every MIME entity of a raw message starts and ends,
without recursion and without decoding anything, while enforcing the structural limits.
``message.parse`` runs it before the stdlib parser (CPython 3.11's ``email`` parser
recurses once per nesting level and raises ``RecursionError`` near 2,000 nested
multiparts) and keeps the result on the ``ParsedMessage``; from there the encoding check
reads the leaf bodies, the repairs cut and rebuild parts, and ``rewrite.fold_long_lines``
re-encodes one leaf part while leaving every other byte untouched, all without scanning
the same bytes again.

The scanner follows RFC 2045/2046 closely enough to agree with the stdlib parser on
well-formed mail: header fields end at the first empty line or at the first line that is
not a header field; a multipart's body is split at delimiter lines ``--boundary`` (the line
break *before* a delimiter belongs to the delimiter, RFC 2046 §5.1.1); the body of a
``message/rfc822`` part is itself an entity. Lines end at LF (a CR before it is part of
the line ending); bare CR is not a line break here, so callers normalise line endings
first when that matters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import GatewayError

# RFC 2045 §5.1 token characters for type and subtype.
_TYPE = re.compile(rb"\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)")
_BOUNDARY = re.compile(rb"""(?:^|;)\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))""", re.I)
# The stdlib feed parser's test for "this line is a header field" (email/feedparser.py).
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[ \t]")


class StructureLimit(GatewayError):
    """The message exceeds a structural limit; ``kind`` names which one."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True, slots=True)
class Entity:
    """Where one MIME entity lies in the raw bytes.

    ``start:header_end`` holds the header fields (each with its line ending);
    ``body_start:body_end`` holds the body. ``body_start == header_end`` when there was
    no empty separator line; otherwise the separator lies between them.
    """

    start: int
    header_end: int
    body_start: int
    body_end: int
    depth: int  # number of enclosing containers; 0 for the message itself
    content_type: str  # lower-cased type/subtype, with the RFC 2045/2046 defaults applied
    boundary: bytes | None  # set for a multipart with a usable boundary
    cte: str  # lower-cased Content-Transfer-Encoding, "" when absent
    has_separator: bool

    @property
    def is_container(self) -> bool:
        """Tell whether this is a multipart with a boundary or a message/rfc822 part."""
        return self.boundary is not None or self.content_type == "message/rfc822"


@dataclass(frozen=True, slots=True)
class Structure:
    """Every entity of a message in document order, and the deepest nesting seen."""

    entities: tuple[Entity, ...]
    max_depth: int


@dataclass(slots=True)
class _Open:
    """An entity whose extent is still being discovered."""

    start: int
    depth: int
    default_type: str
    header_end: int = -1
    body_start: int = -1
    body_end: int = -1
    content_type: str = ""
    boundary: bytes | None = None
    cte: str = ""
    has_separator: bool = False
    closed_multipart: bool = False  # its close delimiter was seen; only the epilogue is left

    def freeze(self) -> Entity:
        return Entity(
            self.start,
            self.header_end,
            self.body_start,
            self.body_end,
            self.depth,
            self.content_type,
            self.boundary,
            self.cte,
            self.has_separator,
        )


def _field_value(lines: list[bytes]) -> bytes:
    # RFC 5322 §2.2.3 unfolding: drop the line breaks, keep the whitespace.
    joined = b"".join(line.rstrip(b"\r\n") for line in lines)
    return joined.partition(b":")[2].strip()


def _classify(entity: _Open, ctype: bytes | None, cte: bytes | None) -> None:
    content_type = entity.default_type
    boundary: bytes | None = None
    if ctype is not None:
        match = _TYPE.match(ctype)
        # RFC 2045 §5.2: an unparseable Content-Type means text/plain.
        content_type = "text/plain" if match is None else match.group(1).lower().decode("ascii")
        if content_type.startswith("multipart/"):
            params = ctype[match.end() :] if match is not None else b""
            found = _BOUNDARY.search(params)
            if found is not None:
                quoted, bare = found.group(1), found.group(2)
                value = re.sub(rb"\\(.)", rb"\1", quoted) if quoted is not None else bare
                boundary = value or None
    entity.content_type = content_type
    entity.boundary = boundary
    entity.cte = cte.decode("latin-1").strip().lower() if cte is not None else ""


def scan(raw: bytes, *, max_depth: int, max_parts: int, max_header_bytes: int) -> Structure:
    """Return the entity spans of ``raw`` or raise ``StructureLimit``.

    Limits: ``header-too-large`` when any header section exceeds ``max_header_bytes``,
    ``mime-too-deep`` when an entity would sit deeper than ``max_depth`` containers,
    ``too-many-parts`` when there are more than ``max_parts`` entities below the message.
    Work is linear in the input size times the nesting depth, which is bounded.
    """
    size = len(raw)
    done: list[tuple[int, _Open]] = []  # (order of appearance, entity)
    order = 0
    stack: list[tuple[int, _Open]] = []  # open containers, outermost first
    parts = 0
    deepest = 0

    current: _Open | None = _Open(0, 0, "text/plain")
    current_order = order
    pos = 0
    in_header = True

    while True:
        # Recomputed once per header section or delimiter, both bounded by max_parts.
        active = _active(stack)
        if in_header:
            assert current is not None
            # Header mode: line by line until an empty line or a non-header line.
            ctype_lines: list[bytes] | None = None
            cte_lines: list[bytes] | None = None
            collecting: list[bytes] | None = None
            ctype_seen = cte_seen = False
            header_start = pos
            ended_by_delimiter: tuple[int, int, int] | None = None
            while True:
                if pos >= size:
                    current.header_end = current.body_start = size
                    break
                nl = raw.find(b"\n", pos)
                end = size if nl < 0 else nl + 1
                line = raw[pos:end]
                content = line.rstrip(b"\r\n")
                if pos - header_start + len(line) > max_header_bytes:
                    raise StructureLimit(
                        "header-too-large",
                        f"a header section is larger than {max_header_bytes} bytes",
                    )
                if content == b"":
                    current.header_end = pos
                    current.body_start = end
                    current.has_separator = True
                    pos = end
                    break
                if active and content.startswith(b"--"):
                    hit = _match_delimiter(content, active)
                    if hit is not None:
                        current.header_end = current.body_start = pos
                        ended_by_delimiter = (hit[0], hit[1], pos)
                        break
                if not _HEADER_LINE.match(content):
                    current.header_end = current.body_start = pos
                    break
                if content[:1] in (b" ", b"\t"):
                    if collecting is not None:
                        collecting.append(line)
                else:
                    collecting = None
                    name = content.partition(b":")[0].strip().lower()
                    if name == b"content-type" and not ctype_seen:
                        ctype_seen = True
                        ctype_lines = collecting = [line]
                    elif name == b"content-transfer-encoding" and not cte_seen:
                        cte_seen = True
                        cte_lines = collecting = [line]
                pos = end
            _classify(
                current,
                _field_value(ctype_lines) if ctype_lines is not None else None,
                _field_value(cte_lines) if cte_lines is not None else None,
            )
            if ended_by_delimiter is not None:
                current.body_end = current.body_start
                done.append((current_order, current))
                current = None
                index, kind, line_start = ended_by_delimiter
                current, current_order, pos, in_header = _on_delimiter(
                    raw, stack, done, index, kind, line_start
                )
                order += 1
                if current is not None:
                    current_order = order
                    parts += 1
                    deepest = max(deepest, current.depth)
                    _check_limits(current.depth, parts, max_depth, max_parts)
                continue
            if current.boundary is not None or current.content_type == "message/rfc822":
                stack.append((current_order, current))
                if current.content_type == "message/rfc822" and current.boundary is None:
                    # RFC 2046 §5.2.1: the body is a complete message, i.e. one entity.
                    order += 1
                    child = _Open(current.body_start, current.depth + 1, "text/plain")
                    parts += 1
                    deepest = max(deepest, child.depth)
                    _check_limits(child.depth, parts, max_depth, max_parts)
                    current, current_order = child, order
                    pos = child.start
                    in_header = True
                    continue
                current = None  # in the preamble of a multipart
            in_header = False
            continue

        # Body mode: jump from one "--" at the start of a line to the next.
        hit_at: tuple[int, int, int] | None = None
        if active:
            search = pos  # always the start of a line
            while search < size:
                if raw.startswith(b"--", search):
                    line_start = search
                else:
                    at = raw.find(b"\n--", search)
                    if at < 0:
                        break
                    line_start = at + 1
                nl = raw.find(b"\n", line_start)
                line_end = size if nl < 0 else nl + 1
                hit = _match_delimiter(raw[line_start:line_end].rstrip(b"\r\n"), active)
                if hit is not None:
                    hit_at = (hit[0], hit[1], line_start)
                    break
                search = line_end
        if hit_at is None:
            # End of input closes everything still open.
            if current is not None:
                current.body_end = size
                done.append((current_order, current))
            for entry_order, entry in stack:
                entry.body_end = size
                done.append((entry_order, entry))
            break
        index, kind, line_start = hit_at
        if current is not None:
            current.body_end = _before_break(raw, line_start, current.body_start)
            done.append((current_order, current))
        current, current_order, pos, in_header = _on_delimiter(
            raw, stack, done, index, kind, line_start
        )
        order += 1
        if current is not None:
            current_order = order
            parts += 1
            deepest = max(deepest, current.depth)
            _check_limits(current.depth, parts, max_depth, max_parts)

    done.sort(key=lambda item: item[0])
    return Structure(tuple(entity.freeze() for _, entity in done), deepest)


def _check_limits(depth: int, parts: int, max_depth: int, max_parts: int) -> None:
    if depth > max_depth:
        raise StructureLimit("mime-too-deep", f"MIME parts are nested more than {max_depth} deep")
    if parts > max_parts:
        raise StructureLimit("too-many-parts", f"the message has more than {max_parts} MIME parts")


def _active(stack: list[tuple[int, _Open]]) -> dict[bytes, int]:
    """Map each boundary still open to the stack index of the innermost multipart using it."""
    return {
        entry.boundary: index
        for index, (_, entry) in enumerate(stack)
        if entry.boundary is not None and not entry.closed_multipart
    }


def _match_delimiter(content: bytes, active: dict[bytes, int]) -> tuple[int, int] | None:
    """Return (stack index, 1 for a part delimiter or 2 for the close delimiter) or None.

    One dictionary lookup per line, whatever the depth. The innermost open multipart wins;
    an outer boundary also ends inner parts, which is how the stdlib parser recovers from
    a missing close delimiter.
    """
    if not content.startswith(b"--"):
        return None
    # RFC 2046 §5.1.1: "--" boundary, optional "--", then optional linear white space.
    rest = content[2:].rstrip(b" \t\r")
    part = active.get(rest, -1)
    close = active.get(rest[:-2], -1) if rest.endswith(b"--") else -1
    if part < 0 and close < 0:
        return None
    return (part, 1) if part > close else (close, 2)


def _before_break(raw: bytes, line_start: int, floor: int) -> int:
    # RFC 2046 §5.1.1: the CRLF preceding a delimiter line is part of the delimiter.
    end = line_start
    if end > floor and raw[end - 1 : end] == b"\n":
        end -= 1
        if end > floor and raw[end - 1 : end] == b"\r":
            end -= 1
    return max(end, floor)


def _on_delimiter(
    raw: bytes,
    stack: list[tuple[int, _Open]],
    done: list[tuple[int, _Open]],
    index: int,
    kind: int,
    line_start: int,
) -> tuple[_Open | None, int, int, bool]:
    """Close what the delimiter ends; return (new part, its order, position, header mode)."""
    # Everything nested inside the matched multipart ends here.
    while len(stack) > index + 1:
        entry_order, entry = stack.pop()
        entry.body_end = _before_break(raw, line_start, entry.body_start)
        done.append((entry_order, entry))
    nl = raw.find(b"\n", line_start)
    after = len(raw) if nl < 0 else nl + 1
    owner = stack[index][1]
    if kind == 2:
        owner.closed_multipart = True  # the epilogue runs until an outer delimiter or the end
        return None, -1, after, False
    default = "message/rfc822" if owner.content_type == "multipart/digest" else "text/plain"
    return _Open(after, owner.depth + 1, default), -1, after, True
