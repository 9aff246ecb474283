"""The distributor's report book stays bounded, and the report formats for logs and terminals."""

from __future__ import annotations

from distributor.models import TaskState
from distributor.report import MAX_KEYS, OTHER, SAMPLES_PER_OPERATION, ReportBook
from eventbus.report import log_lines, table


def test_operations_and_error_types_past_the_cap_share_the_other_bucket() -> None:
    book = ReportBook()
    for i in range(MAX_KEYS + 200):
        book.finished(f"op{i}", TaskState.FAILED, 1.0, f"Error{i}")
    operations, errors = book.operations(), book.errors()
    assert len(operations) == MAX_KEYS and len(errors) == MAX_KEYS
    assert operations[OTHER]["failed"] == 201 and errors[OTHER] == 201


def test_completion_times_keep_only_the_most_recent_samples() -> None:
    book = ReportBook()
    for i in range(SAMPLES_PER_OPERATION * 3):
        book.finished("echo", TaskState.SUCCEEDED, float(i), None)
    stats = book.operations()["echo"]
    assert stats["succeeded"] == SAMPLES_PER_OPERATION * 3
    assert stats["completion_s"]["p50"] >= SAMPLES_PER_OPERATION * 2  # the old samples are gone


def test_report_formats_as_a_few_log_lines_and_a_table() -> None:
    book = ReportBook()
    book.finished("echo", TaskState.SUCCEEDED, 0.25, None)
    book.finished("echo", TaskState.EXPIRED, 3.0, "DeadlineExpired")
    report = {"uptime_s": 12.5, "operations": book.operations(), "collectors": [], "errors": book.errors()}
    lines = log_lines(report)
    assert lines[0] == "report: uptime 12.5s, 2 tasks finished, 1 operations"
    assert "operation=echo succeeded=1 failed=0 expired=1" in lines[1] and "p50=0.250s" in lines[1]
    assert lines[-1] == "report: errors DeadlineExpired=1"
    assert "no collectors registered" in table(report)
