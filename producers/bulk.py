"""Bulk publishing from a file: what `smsfleet publish --file jobs.jsonl|jobs.csv` runs.

Formats, chosen by extension (`.jsonl`, `.ndjson`, `.json` -> JSON Lines; `.csv` -> CSV) or by `fmt`:

- JSON Lines: one SendJob object per line (DESIGN §3).
- CSV: a header row naming SendJob fields (`id`, `sender`, `account`, `to`, `text`, `originator`,
  `valid_until`); `meta.<key>` columns fill `meta`; an empty optional cell means "absent"; other
  columns are ignored. A header without a required column fails the whole file before anything is sent.

Every record goes through `decode_job` (the phone comes back in E.164) and the sender check; a bad record
is reported with its line number (as a person counts lines: the CSV header is line 1) and never stops the
others. Blank lines are skipped. The file is streamed: records are read only as publish slots free up.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from smsfleet.contracts import InvalidJob, SendJob, decode_job

from .publisher import Publisher, PublishError

if TYPE_CHECKING:
    from _csv import Reader

__all__ = [
    "BulkFileError",
    "Format",
    "Summary",
    "count_records",
    "detect_format",
    "publish_file",
    "read_csv",
    "read_jobs",
    "read_jsonl",
]

Format = Literal["jsonl", "csv"]
#: a record read from a file: its line number, and the job or why it is not one
Record = tuple[int, SendJob | InvalidJob]

FORMATS: Final[dict[str, Format]] = {
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "json": "jsonl",
    "csv": "csv",
}
REQUIRED: Final = ("id", "sender", "account", "to", "text")
OPTIONAL: Final = ("originator", "valid_until")
META_PREFIX: Final = "meta."
_BOM: Final = b"\xef\xbb\xbf"
_BLANK: Final = b" \t\r\n"
_BLANK_CSV: Final = b" \t\r\n,"


class BulkFileError(ValueError):
    """The file as a whole cannot be used (unknown format, CSV header without a required column...)."""


@dataclass(slots=True)
class Summary:
    """What `publish_file` did. `rejected` holds (line number, `<code>: <reason>`), by line number."""

    published: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return self.published + len(self.rejected)


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> Format:
    """The file's format: `fmt` when given, else from the extension."""
    name = (fmt or Path(path).suffix.removeprefix(".")).lower()
    found = FORMATS.get(name)
    if found is None:
        given = f"format {fmt!r}" if fmt else f"extension of {os.fspath(path)!r}"
        raise BulkFileError(f"unknown {given}: use .jsonl (.ndjson, .json) or .csv, or pass the format")
    return found


def count_records(path: str | os.PathLike[str], fmt: str | None = None) -> int:
    """How many records the file holds, for a progress total: a quick pass over its lines.

    A CSV record whose quoted cell spans several lines counts once per line, so the total can be a
    little high; `publish_file` reports the true count at the end. Also catches, before anything is
    sent, a CSV that is not UTF-8 and a JSON array given where JSON Lines are expected.
    """
    kind = detect_format(path, fmt)
    count = 0
    with Path(path).open("rb") as file:
        for number, line in enumerate(file, 1):
            if kind == "jsonl":
                if not line.strip(_BLANK):
                    continue
                if count == 0 and line.removeprefix(_BOM).lstrip(_BLANK).startswith(b"["):
                    raise BulkFileError(f"line {number}: a JSON array is not JSON Lines; write one job object per line")
                count += 1
            else:
                try:
                    line.decode()
                except UnicodeDecodeError:
                    raise BulkFileError(f"line {number}: not UTF-8 text; save the CSV as UTF-8") from None
                if line.strip(_BLANK_CSV):
                    count += 1
    return max(count - 1, 0) if kind == "csv" else count  # the CSV header is no record


def read_jsonl(lines: Iterable[bytes | str], default_region: str | None = None) -> Iterator[Record]:
    """Decode JSON Lines, skipping blank lines."""
    for number, line in enumerate(lines, 1):
        data = _without_bom(line) if number == 1 else line
        if not data.strip():
            continue
        try:
            yield number, decode_job(data, default_region)
        except InvalidJob as exc:
            yield number, exc


def _without_bom(line: bytes | str) -> bytes | str:
    return line.removeprefix(_BOM) if isinstance(line, bytes) else line.removeprefix("\ufeff")


def read_csv(lines: Iterable[str], default_region: str | None = None) -> Iterator[Record]:
    """Decode CSV records. The header is read and checked now (BulkFileError), the records lazily."""
    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader, [])]
    if not header:
        return iter(())
    duplicates = sorted(name for name, n in Counter(header).items() if n > 1)
    if duplicates:
        raise BulkFileError(f"line 1: the CSV header repeats column(s) {', '.join(duplicates)}")
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise BulkFileError(
            f"line 1: the CSV header lacks column(s) {', '.join(missing)} "
            f"(it needs {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)}, meta.<key>)"
        )
    return _csv_records(reader, header, default_region)


def _csv_records(reader: Reader, header: list[str], default_region: str | None) -> Iterator[Record]:
    fields = [(i, name, name in REQUIRED) for i, name in enumerate(header) if name in REQUIRED or name in OPTIONAL]
    metas = [
        (i, name.removeprefix(META_PREFIX))
        for i, name in enumerate(header)
        if name.startswith(META_PREFIX) and len(name) > len(META_PREFIX)
    ]
    width = len(header)
    previous = reader.line_num
    while True:
        start = previous + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous = reader.line_num
            yield start, InvalidJob("malformed", f"not a CSV record: {exc}")
            continue
        previous = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > width:
            yield start, InvalidJob("malformed", f"the row has {len(row)} cells; the header has {width}")
            continue
        if len(row) < width:
            row += [""] * (width - len(row))
        doc: dict[str, object] = {}
        for i, name, required in fields:
            cell = row[i]
            if required or cell.strip():
                doc[name] = cell
        meta = {key: row[i] for i, key in metas if row[i].strip()}
        if meta:
            doc["meta"] = meta
        try:
            yield start, decode_job(msgspec.json.encode(doc), default_region)
        except InvalidJob as exc:
            yield start, exc


def read_jobs(
    path: str | os.PathLike[str], fmt: str | None = None, default_region: str | None = None
) -> Generator[Record, None, None]:
    """Stream a file's records, `(line number, SendJob | InvalidJob)`, the file closed when done."""
    kind = detect_format(path, fmt)
    if kind == "jsonl":
        with Path(path).open("rb") as file:
            yield from read_jsonl(file, default_region)
    else:
        with Path(path).open(encoding="utf-8-sig", newline="") as file:
            yield from read_csv(file, default_region)


async def publish_file(
    publisher: Publisher,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    default_region: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Publish every valid record of a JSONL or CSV file; report the others with their line numbers.

    `progress(done, total)` is called as records are confirmed or rejected (often, but not for every
    record) and once at the end with `done == total`. `total` comes from a quick first pass over the file.
    Raises BulkFileError, before anything is sent, when the file as a whole is unusable.
    """
    started = time.perf_counter()
    kind = detect_format(path, fmt)
    total = await asyncio.to_thread(count_records, path, kind)
    summary = Summary()
    done = 0
    step = max(1, total // 1000)
    next_report = step

    def advance() -> None:
        nonlocal done, next_report
        done += 1
        if progress is not None and done >= next_report:
            next_report = done + step
            progress(done, max(total, done))

    records = read_jobs(path, kind, default_region)
    first = next(records, None)  # opens the file and checks a CSV header before anything is sent

    def jobs() -> Iterator[tuple[int, SendJob]]:
        pending = records if first is None else itertools.chain((first,), records)
        for number, item in pending:
            if isinstance(item, InvalidJob):
                summary.rejected.append((number, f"{item.code}: {item.message}"))
                advance()
            else:
                yield number, item

    def on_result(number: int, _job: SendJob, error: PublishError | None) -> None:
        if error is None:
            summary.published += 1
        else:
            summary.rejected.append((number, error.reason))
        advance()

    if progress is not None:
        progress(0, total)
    try:
        await publisher.publish_stream(jobs(), on_result)
    finally:
        records.close()
    summary.elapsed = time.perf_counter() - started
    summary.rejected.sort()
    if progress is not None:
        progress(done, done)
    return summary
