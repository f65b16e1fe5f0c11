"""``mailgate consent import`` on the files dealers really send: Excel encodings, CRM headers.

Real SQLite stores, real files, the real command line. Each test names the bug it covers
(issue 17: B4 encodings and half-applied imports, B11 unknown columns, B12 the progress bar).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli.common import Progress
from gateway.cli.consent import ImportInterrupted, UnreadableFile, import_file, scan
from gateway.cli.main import main
from gateway.consent.csvformat import RowContext
from gateway.consent.ops import ConsentOps
from gateway.consent.rules import ConsentRules
from gateway.storage.sqlite import SqliteStorage
from gateway.types import DealerId
from tests.shipped import copy_shipped

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DEALER = DealerId("example-motors")
CONTEXT = RowContext(NOW, "example-motors", {"example-motors": ConsentRules()})
HEADER = "address,event,date,source\r\n"


class Clock:
    def now(self) -> datetime:
        return NOW


def rows(n: int, source: str = "Société Générale", start: int = 0) -> str:
    return "".join(
        f"c{i}@customer.example,inquiry,2025-06-01,{source}\r\n" for i in range(start, start + n)
    )


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStorage:
    opened = await SqliteStorage.open(str(tmp_path / "c.db"))
    yield opened  # type: ignore[misc]
    await opened.close()


async def sources(store: SqliteStorage, n: int) -> set[str]:
    found = await store.consent_records(DEALER, [f"c{i}@customer.example" for i in range(n)])
    return {e.source for record in found.values() for e in record.events}


# -- B4: encodings ----------------------------------------------------------------------


async def test_b4_a_windows_1252_file_is_read_as_such_with_a_warning(
    tmp_path: Path, store: SqliteStorage
) -> None:
    # 7,000 rows, the é of "Société" in row 6,001 only: the crash came after 5,000 rows.
    path = tmp_path / "excel.csv"
    path.write_bytes((HEADER + rows(6000, "dms") + rows(1000, start=6000)).encode("cp1252"))
    result = await import_file(ConsentOps(store, Clock()), path, CONTEXT)
    assert (result.read, result.changed, result.rejected) == (7000, 7000, 0)
    assert result.encoding == "cp1252"
    assert "line 6002: byte 0xE9 is not utf-8" in result.warning
    assert "read as Windows-1252" in result.warning
    assert await sources(store, 7000) == {"dms", "Société Générale"}


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"\xef\xbb\xbf" + (HEADER + rows(3)).encode(), "utf-8-sig"),
        ((HEADER + rows(3)).encode("utf-16"), "utf-16"),
        ((HEADER + rows(3)).encode(), "utf-8"),
    ],
    ids=["utf-8-bom", "utf-16-bom", "utf-8"],
)
async def test_b4_a_bom_or_utf_8_is_read_without_a_warning(
    tmp_path: Path, store: SqliteStorage, data: bytes, encoding: str
) -> None:
    path = tmp_path / "crm.csv"
    path.write_bytes(data)
    result = await import_file(ConsentOps(store, Clock()), path, CONTEXT)
    assert (result.encoding, result.warning, result.changed) == (encoding, "", 3)
    assert await sources(store, 3) == {"Société Générale"}


async def test_b4_encoding_given_by_the_operator(tmp_path: Path, store: SqliteStorage) -> None:
    path = tmp_path / "mac.csv"
    path.write_bytes((HEADER + rows(2)).encode("mac_roman"))
    result = await import_file(ConsentOps(store, Clock()), path, CONTEXT, encoding="mac_roman")
    assert result.encoding == "mac_roman" and result.changed == 2
    assert await sources(store, 2) == {"Société Générale"}


async def test_b4_a_file_no_encoding_fits_writes_nothing(
    tmp_path: Path, store: SqliteStorage
) -> None:
    path = tmp_path / "broken.csv"
    # 0x81 is undefined in Windows-1252 and not UTF-8: refused before any row is written.
    path.write_bytes((HEADER + rows(6000, "dms")).encode() + b"x@customer.example,inquiry,"
                     b"2025-06-01,\x81\r\n")  # fmt: skip
    with pytest.raises(UnreadableFile, match=r"neither UTF-8 .* nor Windows-1252") as caught:
        await import_file(ConsentOps(store, Clock()), path, CONTEXT)
    assert "line 6002" in str(caught.value) and "nothing was imported" in str(caught.value)
    assert await sources(store, 10) == set()


async def test_b4_a_store_failure_part_way_says_what_was_committed_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(HEADER + rows(25, "dms"))
    store = await SqliteStorage.open(str(tmp_path / "c.db"))

    class CloseAfterFirstBatch:
        total: int | None = None

        def advance(self, count: int = 1) -> None:
            if count > 1:
                store._closed = True  # the store goes away after the first commit

    with pytest.raises(ImportInterrupted) as caught:
        await import_file(ConsentOps(store, Clock()), path, CONTEXT, batch=10,
                          progress=CloseAfterFirstBatch())  # fmt: skip
    assert caught.value.result.committed == 10 and caught.value.result.line == 21
    store._closed = False
    await store.close()
    store = await SqliteStorage.open(str(tmp_path / "c.db"))
    try:
        again = await import_file(ConsentOps(store, Clock()), path, CONTEXT, batch=10)
        assert (again.read, again.changed) == (25, 15)  # the first ten were already there
    finally:
        await store.close()


def test_b4_scan_counts_lines_for_the_progress_bar(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(HEADER + rows(123))
    assert scan(path, None).lines == 123


# -- B11: columns, from the command line ----------------------------------------------------


def configured(tmp_path: Path) -> Path:
    policies = copy_shipped(tmp_path / "policies")
    config = tmp_path / "mailgate.toml"
    config.write_text(
        f'[server]\nhostname = "mailgate.test"\ndata_dir = "{tmp_path / "var"}"\n'
        f'policies_dir = "{policies}"\n'
    )
    assert main(["--config", str(config), "init"]) == 0
    return config


def test_b11_unknown_columns_refuse_the_file_and_a_mapping_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configured(tmp_path)
    path = tmp_path / "dms.csv"
    path.write_text(
        "E-mail Address,Event,Date,Last Payment,Ref,Salesperson\n"
        "john@customer.example,sale-finance,2021-04-01,2025-03-01,D-1,Bob\n"
    )
    base = ["--config", str(config), "consent", "import", str(path), "--dealer", "example-motors"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "unknown column 'last payment' (did you mean 'last_payment'?)" in err
    assert "unknown column 'ref'" in err and "--map 'Last Payment=last_payment'" in err
    assert "nothing was imported" in err
    mapped = [*base, "--map", "E-mail Address=address", "--map", "Last Payment=last_payment",
              "--map", "Ref=reference"]  # fmt: skip
    assert main(mapped) == 2 and "'salesperson'" in capsys.readouterr().err
    assert main([*mapped, "--ignore-unknown-columns"]) == 0
    assert "1 rows: 1 new or changed" in capsys.readouterr().out
    assert main(["--config", str(config), "consent", "show", "john@customer.example",
                 "--dealer", "example-motors", "--json"]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    assert '"last_payment": "2025-03-01"' in shown and '"ref": "D-1"' in shown


def test_b4_the_command_warns_about_windows_1252(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configured(tmp_path)
    path = tmp_path / "excel.csv"
    path.write_bytes((HEADER + rows(2)).encode("cp1252"))
    assert main(["--config", str(config), "consent", "import", str(path),
                 "--dealer", "example-motors"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "warning: not UTF-8 (line 2: byte 0xE9 is not utf-8)" in captured.err
    assert "2 rows: 2 new or changed" in captured.out


# -- B12: the progress bar ---------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_b12_a_rejected_row_does_not_freeze_the_progress_bar(
    tmp_path: Path, store: SqliteStorage
) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(HEADER + "not-an-address,inquiry,2025-06-01,dms\r\n" + rows(12_000, "dms"))
    stream = Tty()
    progress = Progress("importing", None, stream)
    result = await import_file(ConsentOps(store, Clock()), path, CONTEXT, progress=progress)
    assert result.rejected == 1 and result.changed == 12_000
    drawn = [part for part in stream.getvalue().split("\r") if part]
    assert drawn[-1].endswith("12001/12001")
    assert any(part.endswith("5001/12001") for part in drawn)
