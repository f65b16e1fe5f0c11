"""Look inside archive attachments within fixed limits (pure).

This module owns the walk through an attachment that holds other files: zip (``zipfile``),
tar (``tarfile``), and the single-file compressors gzip, bzip2 and xz (``zlib``, ``bz2``,
``lzma``), which often wrap a tar (``.tgz``, ``.tar.gz``) or one program
(``setup.exe.gz``). Everything is read from memory with the standard library.

Formats the standard library cannot open (RAR, 7-Zip, CAB, ACE, ARJ, LHA, Zstandard) are
not opened at all: they are reported as impossible to check, and the dealer's policy
decides (held by default). ``py7zr`` could list a 7-Zip archive, but it decodes the
archive's compressed header (up to 256 MiB) before a single name can be read, brings nine
further packages (seven compiled), and 7-Zip files from dealers' CRMs are rare; ``rarfile``
lists RAR names but needs the non-free ``unrar`` program for any content. Holding those
archives costs little and keeps the work per message bounded.

The limits (``ArchiveLimits``, options of the dangerous-attachment check) bound the work:

* ``max_entries``: members listed, over all nested archives;
* ``max_bytes``: uncompressed bytes the members declare, over all nested archives;
* ``max_ratio``: a member that declares more than this many times its compressed size
  (and over 1 MiB) is a decompression bomb, which is dangerous in itself;
* ``max_depth``: archives inside archives opened this deep;
* ``max_scan_bytes``: bytes actually decompressed, over all nested archives. Members are
  never decompressed whole beyond it: a nested archive larger than what is left is not
  opened, and a compressed stream is decompressed only up to it.

An archive that breaks a limit, is encrypted, damaged or of an unreadable format cannot be
shown to be safe: ``ArchiveReport.uninspectable`` says why. A member that is a program (by
its name, as the caller's ``name_kind`` judges) or a bomb makes it dangerous:
``ArchiveReport.dangerous`` says which.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Compressed files this small are normal even at extreme ratios (blank forms, logs).
BOMB_FLOOR = 1024 * 1024
_MB = 1024 * 1024

# Archive formats with no standard-library reader, and how a dealer knows them.
UNREADABLE = {
    "rar": "RAR",
    "7z": "7-Zip",
    "cab": "Windows cabinet (CAB)",
    "ace": "ACE",
    "arj": "ARJ",
    "lzh": "LHA",
    "zstd": "Zstandard",
}
_EXTENSIONS = {
    "zip": "zip",
    "tar": "tar",
    "tgz": "gzip",
    "taz": "gzip",
    "gz": "gzip",
    "tbz": "bzip2",
    "tbz2": "bzip2",
    "bz2": "bzip2",
    "txz": "xz",
    "xz": "xz",
    "rar": "rar",
    "7z": "7z",
    "cab": "cab",
    "ace": "ace",
    "arj": "arj",
    "lzh": "lzh",
    "lha": "lzh",
    "zst": "zstd",
}
COMPRESSED = frozenset({"gzip", "bzip2", "xz"})
_COMPRESSED_SUFFIXES = {"gz", "bz2", "xz"}
_TAR_SHORTHAND = {"tgz", "taz", "tbz", "tbz2", "txz"}


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """How far archives are inspected (policy options of dangerous-attachment)."""

    max_depth: int = 3
    max_entries: int = 1000
    max_bytes: int = 100 * _MB
    max_ratio: int = 100
    max_scan_bytes: int = 8 * _MB


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    """What the walk found: why the archive is dangerous, and why part of it was unreadable.

    Either may be ``None``; ``dangerous`` wins for the dealer, ``uninspectable`` says what
    could not be looked at.
    """

    dangerous: str | None = None
    uninspectable: str | None = None


def archive_kind(name: str, data: bytes) -> str | None:
    """Say which archive or compressed format ``data`` is (magic first, then the name)."""
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data[:3] == b"BZh" and data[4:10] == b"1AY&SY":
        return "bzip2"
    if data.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if data.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if data.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if data.startswith(b"MSCF\x00\x00\x00\x00"):
        return "cab"
    if data[7:14] == b"**ACE**":
        return "ace"
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if data[257:262] == b"ustar":
        return "tar"
    extension = name.lower().rstrip(". ").rsplit(".", 1)[-1] if "." in name else ""
    return _EXTENSIONS.get(extension)


def inner_name(name: str) -> str:
    """The name of what a compressed file holds: ``setup.exe.gz`` -> ``setup.exe``."""
    stem, _, extension = name.rpartition(".")
    extension = extension.lower()
    if extension in _TAR_SHORTHAND:
        return f"{stem}.tar"
    if extension in _COMPRESSED_SUFFIXES and stem:
        return stem
    return name


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    size: int  # uncompressed, as declared
    packed: int | None  # compressed, as declared (None: stored, or unknown)
    encrypted: bool
    is_file: bool
    read: Callable[[], bytes]


_Pending = tuple[bytes, str, str, str, int]


class _Stop(Exception):
    """The walk is over: a decisive finding, or a limit reached."""


class _Walk:
    def __init__(self, label: str, limits: ArchiveLimits, name_kind: Callable[[str], str | None]):
        self.label = label
        self.limits = limits
        self.name_kind = name_kind
        self.entries = 0
        self.declared = 0
        self.scanned = 0
        self.dangerous: str | None = None
        self.uninspectable: str | None = None

    def cannot(self, reason: str) -> None:
        if self.uninspectable is None:
            self.uninspectable = reason

    def stop_dangerous(self, reason: str) -> None:
        self.dangerous = reason
        raise _Stop

    def stop_cannot(self, reason: str) -> None:
        self.cannot(reason)
        raise _Stop

    @property
    def budget(self) -> int:
        return max(0, self.limits.max_scan_bytes - self.scanned)

    def count(self, size: int) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            self.stop_cannot(f"{self.label} has more than {self.limits.max_entries} files to check")
        self.declared += max(size, 0)
        if self.declared > self.limits.max_bytes:
            self.stop_cannot(f"{self.label} unpacks to more than {self.limits.max_bytes // _MB} MB")

    def bomb(self, size: int, packed: int) -> bool:
        return size > BOMB_FLOOR and size > self.limits.max_ratio * max(packed, 1)

    # -- one archive --------------------------------------------------------------------

    def walk(self, data: bytes, kind: str, name: str, where: str) -> None:
        # (bytes, format, file name, how the dealer is told where it is, depth)
        pending: list[_Pending] = [(data, kind, name, where, 1)]
        while pending:
            blob, blob_kind, blob_name, blob_where, blob_depth = pending.pop()
            if blob_kind in UNREADABLE:
                self.cannot(
                    f"{blob_where} is a {UNREADABLE[blob_kind]} archive, which cannot be "
                    "opened to check"
                )
                continue
            if blob_kind in COMPRESSED:
                held = self._stream(blob, blob_kind, blob_name, blob_where)
                if held is not None:
                    # A .tar.gz is one archive to the dealer: the tar is at the same depth.
                    pending.append(
                        (held[0], held[1], inner_name(blob_name), blob_where, blob_depth)
                    )
                continue
            try:
                for member in self._members(blob, blob_kind, blob_where):
                    found = self._member(member, blob_where, blob_depth)
                    if found is not None:
                        pending.append(found)
            except _Stop:
                raise
            except _Truncated:
                self.cannot(f"{blob_where} is too large to check to the end")
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                tarfile.TarError,
                ValueError,
                OSError,
                EOFError,
                NotImplementedError,
                RuntimeError,
                zlib.error,
                lzma.LZMAError,
            ):
                self.cannot(f"{blob_where} is a damaged archive that cannot be checked")

    def _member(self, member: _Member, where: str, depth: int) -> _Pending | None:
        self.count(member.size)
        inner = member.name.replace("\\", "/").rsplit("/", 1)[-1]
        if member.packed is not None and self.bomb(member.size, member.packed):
            self.stop_dangerous(
                f"{where} contains {inner}, compressed suspiciously well (zip bomb)"
            )
        if member.encrypted:
            self.cannot(f"{where} is password-protected and cannot be checked")
            return None
        if not member.is_file:
            return None
        kind = self.name_kind(inner)
        if kind is not None:
            self.stop_dangerous(f"{where} contains {inner}, {kind}")
        nested = archive_kind(inner, b"")
        if nested is None:
            return None
        label = f"{inner} inside {where}"
        if nested in UNREADABLE:
            self.cannot(f"{label} is a {UNREADABLE[nested]} archive, which cannot be opened")
            return None
        if depth >= self.limits.max_depth:
            self.cannot(f"{where} nests archives more than {self.limits.max_depth} deep")
            return None
        if member.size > self.budget:
            self.cannot(f"{label} is too large to check")
            return None
        data = member.read()
        self.scanned += len(data)
        return data, archive_kind(inner, data) or nested, inner, label, depth + 1

    # -- formats ------------------------------------------------------------------------

    def _members(self, data: bytes, kind: str, where: str) -> Iterator[_Member]:
        if kind == "zip":
            archive = zipfile.ZipFile(io.BytesIO(data))
            for info in archive.infolist():
                yield _Member(
                    info.filename,
                    info.file_size,
                    info.compress_size,
                    bool(info.flag_bits & 0x1),
                    not info.is_dir(),
                    functools.partial(archive.read, info),
                )
            return
        # tar: headers are read one by one and member data skipped, never decompressed.
        # A stream cut short by the scan budget (see _stream) ends with _Truncated.
        truncated = isinstance(data, _Partial)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|" if truncated else "r:") as tar:
            while True:
                try:
                    member = tar.next()
                except tarfile.ReadError:
                    if truncated:
                        raise _Truncated from None
                    raise
                if member is None:
                    if truncated:
                        raise _Truncated
                    return
                yield _Member(
                    member.name,
                    member.size,
                    None,
                    False,
                    member.isfile(),
                    functools.partial(_tar_read, tar, member),
                )

    def _stream(self, data: bytes, kind: str, name: str, where: str) -> tuple[bytes, str] | None:
        """Decompress a gzip/bzip2/xz stream up to the budget; return what it holds."""
        inner = inner_name(name)
        original = _gzip_name(data) if kind == "gzip" else None
        for candidate in dict.fromkeys(n for n in (original, inner) if n and n != name):
            found = self.name_kind(candidate)
            if found is not None:
                self.stop_dangerous(f"{where} is a compressed {candidate}, {found}")
        declared = int.from_bytes(data[-4:], "little") if kind == "gzip" and len(data) > 18 else 0
        if self.bomb(declared, len(data)):
            self.stop_dangerous(f"{where} is compressed suspiciously well (a decompression bomb)")
        budget = self.budget
        try:
            output, complete = _decompress(data, kind, budget)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
            self.cannot(f"{where} is a damaged archive that cannot be checked")
            return None
        self.scanned += len(output)
        if not complete and self.bomb(len(output), len(data)):
            self.stop_dangerous(f"{where} is compressed suspiciously well (a decompression bomb)")
        self.count(len(output))
        if _is_program(output):
            self.stop_dangerous(f"{where} holds a program (its content is an executable)")
        held = archive_kind(inner, output)
        if held is None:
            return None  # one ordinary file, already judged by its name and content
        if not complete:
            if held != "tar":
                self.cannot(f"{where} is too large to check")
                return None
            output = _Partial(output)
        return output, held


class _Truncated(Exception):
    """A tar ran past the part of its compressed stream that was decompressed."""


class _Partial(bytes):
    """Decompressed bytes that stop at the scan budget, before the stream's end."""


def _tar_read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(info)
    return handle.read() if handle is not None else b""


def _decompress(data: bytes, kind: str, budget: int) -> tuple[bytes, bool]:
    """Up to ``budget`` decompressed bytes, and whether that is the whole stream."""
    if kind == "gzip":
        gz = zlib.decompressobj(wbits=31)
        output = gz.decompress(data, budget + 1)
        return output[:budget], gz.eof and len(output) <= budget
    decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor = (
        bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
    )
    output = decompressor.decompress(data, max_length=budget + 1)
    return output[:budget], decompressor.eof and len(output) <= budget


def _gzip_name(data: bytes) -> str | None:
    """The original file name a gzip header may carry (RFC 1952 §2.3.1, FNAME)."""
    if len(data) < 10 or not data[3] & 0x08:
        return None
    position = 10
    if data[3] & 0x04:  # FEXTRA: two-byte length, then that many bytes
        position += 2 + int.from_bytes(data[10:12], "little")
    end = data.find(b"\0", position, position + 1024)
    if end < 0:
        return None
    return data[position:end].decode("latin-1").replace("\\", "/").rsplit("/", 1)[-1] or None


_PROGRAM_MAGIC = (b"MZ", b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def _is_program(data: bytes) -> bool:
    return data.startswith(_PROGRAM_MAGIC)


def inspect_archive(
    data: bytes,
    kind: str,
    name: str,
    label: str,
    limits: ArchiveLimits,
    name_kind: Callable[[str], str | None],
) -> ArchiveReport:
    """Walk the archive ``data`` (of ``kind``, file ``name``), shown to the dealer as ``label``."""
    walk = _Walk(label, limits, name_kind)
    with contextlib.suppress(_Stop):
        walk.walk(data, kind, name, label)
    return ArchiveReport(walk.dangerous, walk.uninspectable)
