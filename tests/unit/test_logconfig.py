"""Log lines: one write each, so processes sharing a stream never mix them."""
from __future__ import annotations

import json
import sys

import structlog

from billing.logconfig import configure_logging


class RecordingStream:
    """A stream that remembers each write call apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_each_json_log_line_is_one_write_ending_in_a_newline(monkeypatch):
    stream = RecordingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    before = structlog.get_config()
    try:
        configure_logging(log_format="json", level="INFO")
        log = structlog.get_logger("test")
        log.warning("broker unreachable", attempt=1, token="secret-value")
        log.info("second line")
    finally:
        structlog.configure(**before)
    assert len(stream.writes) == 2, stream.writes
    for write in stream.writes:
        assert write.endswith("\n") and write.count("\n") == 1, write
        json.loads(write)
    assert json.loads(stream.writes[0])["token"] != "secret-value"
