"""The time files record as "now": the clock, or SOURCE_DATE_EPOCH where a reduction must be repeatable."""

from __future__ import annotations

import datetime as dt

import pytest

from detpipe.pipeline.core.file_clock import SOURCE_DATE_EPOCH, file_time_local, file_time_s, file_time_utc


def test_without_source_date_epoch_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SOURCE_DATE_EPOCH, raising=False)
    before = dt.datetime.now(dt.timezone.utc)
    assert before <= file_time_utc() <= dt.datetime.now(dt.timezone.utc)


def test_source_date_epoch_fixes_every_form_of_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOURCE_DATE_EPOCH, "1764806400")
    assert file_time_utc() == dt.datetime(2025, 12, 4, tzinfo=dt.timezone.utc)
    assert file_time_s() == 1764806400.0
    assert file_time_local() == file_time_utc() and file_time_local().utcoffset() is not None


@pytest.mark.parametrize("value", ["yesterday", "-5", "1.5e9"])
def test_a_source_date_epoch_that_is_not_whole_seconds_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(SOURCE_DATE_EPOCH, value)
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH must be whole seconds since 1970"):
        file_time_utc()
