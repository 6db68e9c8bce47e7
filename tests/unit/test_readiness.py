"""/readyz says what is down, never the error's text (SQL, host names, credentials)."""

from __future__ import annotations

from workers.runtime.readiness import Readiness


class OperationalError(Exception):
    pass


def test_the_report_names_the_kind_of_error_and_not_its_text() -> None:
    readiness = Readiness()
    readiness.ledger_failed(OperationalError('SELECT secret FROM "jobs" at db.internal:5432'))
    readiness.kafka_checked(ConnectionError("broker-7.internal:9092 refused"))
    report = readiness.report()
    assert report["ledger"] == {**report["ledger"], "ok": False, "error": "OperationalError"}
    assert report["kafka"]["error"] == "ConnectionError"
    assert "internal" not in str(report) and not report["ready"]
