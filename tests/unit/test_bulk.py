"""Reading bulk files: JSONL and CSV records into jobs, or into line-numbered reasons. No broker needed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.bulk import BulkFileError, count_records, detect_format, read_csv, read_jobs, read_jsonl
from smsfleet.contracts import InvalidJob, SendJob

PHONE = "+79161234567"


def job_line(**fields: object) -> str:
    doc = {"id": "j1", "sender": "s1", "account": "acme", "to": PHONE, "text": "hello"} | fields
    return json.dumps({k: v for k, v in doc.items() if v is not None})


def outcomes(records: Iterable[tuple[int, SendJob | InvalidJob]]) -> list[tuple[int, str]]:
    """(line, "job:<id>") for jobs, (line, error code) for rejections."""
    return [(n, item.code if isinstance(item, InvalidJob) else f"job:{item.id}") for n, item in records]


# JSON Lines


def test_jsonl_lines_become_jobs_with_e164_phones() -> None:
    lines = [job_line(id="a", to="8 (916) 123-45-67"), job_line(id="b", meta={"campaign": "c1"})]
    records = list(read_jsonl(lines, default_region="RU"))
    assert [n for n, _ in records] == [1, 2]
    first, second = (item for _, item in records)
    assert isinstance(first, SendJob)
    assert first.to == PHONE
    assert isinstance(second, SendJob)
    assert second.meta == {"campaign": "c1"}


def test_jsonl_bad_lines_get_their_line_number_and_reason_and_do_not_stop_the_rest() -> None:
    lines = [
        job_line(id="ok1"),
        '{"id": "broken",',
        "",
        "   ",
        job_line(id="no-text", text=None),
        job_line(id="bad-phone", to="12345"),
        job_line(id="blank-text", text="   "),
        job_line(id="naive-time", valid_until="2030-01-01T00:00:00"),
        "[1, 2]",
        job_line(id="ok2"),
    ]
    records = list(read_jsonl(lines))
    assert outcomes(records) == [
        (1, "job:ok1"),
        (2, "malformed"),
        (5, "schema"),
        (6, "bad_phone"),
        (7, "empty_text"),
        (8, "bad_valid_until"),
        (9, "schema"),
        (10, "job:ok2"),
    ]
    reasons = {n: item.message for n, item in records if isinstance(item, InvalidJob)}
    assert "text" in reasons[5]
    assert "12345" in reasons[6]


def test_jsonl_reads_bytes_and_ignores_a_bom_and_unknown_fields() -> None:
    lines = [b"\xef\xbb\xbf" + job_line(extra="ignored").encode() + b"\n", b"\n"]
    assert outcomes(read_jsonl(lines)) == [(1, "job:j1")]


# CSV

HEADER = "id,sender,account,to,text,originator,valid_until,meta.campaign,meta.batch,notes\n"


def read(text: str, default_region: str | None = None) -> list[tuple[int, SendJob | InvalidJob]]:
    return list(read_csv(io.StringIO(text, newline=""), default_region))


def test_csv_rows_become_jobs_meta_columns_fill_meta_and_empty_optional_cells_are_absent() -> None:
    text = HEADER + (
        '1,s1,acme,8 916 123-45-67,"Hello, world",,,c1,,anything\n'
        "2,s1,acme,+79161234567,Hi,ACME,2030-01-01T00:00:00Z,,b7,\n"
    )
    records = read(text, default_region="RU")
    assert [n for n, _ in records] == [2, 3]  # the header is line 1
    first, second = (item for _, item in records)
    assert first == SendJob(id="1", sender="s1", account="acme", to=PHONE, text="Hello, world", meta={"campaign": "c1"})
    assert second == SendJob(
        id="2",
        sender="s1",
        account="acme",
        to=PHONE,
        text="Hi",
        originator="ACME",
        valid_until=datetime(2030, 1, 1, tzinfo=UTC),
        meta={"batch": "b7"},
    )


def test_csv_bad_rows_are_numbered_as_a_person_counts_lines() -> None:
    text = HEADER + (
        "1,s1,acme,+79161234567,ok,,,,,\n"  # line 2
        "\n"  # 3: blank, skipped
        ",,,,,,,,,\n"  # 4: a spreadsheet's empty row, skipped
        '2,s1,acme,+79161234567,"two\nlines",,,,,\n'  # 5-6: one record
        "3,s1,acme,12345,bad phone,,,,,\n"  # 7
        "4,s1,acme,+79161234567,,,,,,\n"  # 8: empty text
        "5,s1,acme,+79161234567,   ,,,,,\n"  # 9: blank text
        "6,s1,acme,+79161234567,ok,,yesterday,,,\n"  # 10: bad time
        "7,s1,acme,+79161234567,ok,,,,,,extra,cells\n"  # 11: too many cells
        "8,s1,acme\n"  # 12: short row: the missing cells are empty
        "9,s1,acme,+79161234567,last,,,,,\n"  # 13
    )
    assert outcomes(read(text)) == [
        (2, "job:1"),
        (5, "job:2"),
        (7, "bad_phone"),
        (8, "schema"),
        (9, "empty_text"),
        (10, "schema"),
        (11, "malformed"),
        (12, "schema"),
        (13, "job:9"),
    ]


def test_csv_header_without_a_required_column_fails_the_whole_file_at_once() -> None:
    with pytest.raises(BulkFileError, match=r"line 1: .*lacks column\(s\) text"):
        read("id,sender,account,to,txt\n1,s1,acme,+79161234567,hi\n")


def test_csv_header_with_a_repeated_column_fails() -> None:
    with pytest.raises(BulkFileError, match="repeats column"):
        read("id,sender,account,to,text,text\n")


def test_an_empty_csv_has_no_records() -> None:
    assert read("") == []
    assert read("id,sender,account,to,text\n") == []


# files


def test_format_comes_from_the_extension_or_the_argument() -> None:
    assert detect_format("jobs.jsonl") == "jsonl"
    assert detect_format("jobs.NDJSON") == "jsonl"
    assert detect_format("jobs.json") == "jsonl"
    assert detect_format("jobs.csv") == "csv"
    assert detect_format("jobs.txt", "csv") == "csv"
    with pytest.raises(BulkFileError, match="unknown extension"):
        detect_format("jobs.txt")
    with pytest.raises(BulkFileError, match="unknown format"):
        detect_format("jobs.csv", "xml")


def test_read_jobs_streams_a_file_of_either_format(tmp_path: Path) -> None:
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text(job_line(id="a") + "\n\n" + "nope\n" + job_line(id="b") + "\n")
    assert outcomes(read_jobs(jsonl)) == [(1, "job:a"), (3, "malformed"), (4, "job:b")]
    assert count_records(jsonl) == 3

    csv_file = tmp_path / "jobs.csv"
    csv_file.write_bytes(("\ufeff" + HEADER + "1,s1,acme,+79161234567,hi,,,,,\n\n").encode())
    assert outcomes(read_jobs(csv_file)) == [(2, "job:1")]
    assert count_records(csv_file) == 1


def test_count_records_refuses_a_json_array_and_a_csv_that_is_not_utf8(tmp_path: Path) -> None:
    array = tmp_path / "jobs.json"
    array.write_text("[\n" + job_line() + "\n]\n")
    with pytest.raises(BulkFileError, match="JSON array"):
        count_records(array)
    latin1 = tmp_path / "jobs.csv"
    latin1.write_bytes(HEADER.encode() + "1,s1,acme,+79161234567,café,,,,,\n".encode("latin-1"))
    with pytest.raises(BulkFileError, match="line 2: not UTF-8"):
        count_records(latin1)
