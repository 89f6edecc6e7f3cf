"""Log lines: one write each, so processes sharing a stream never mix them."""
from __future__ import annotations

import json
import sys

import pytest
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


# --- masking (issue 10, point 12) ---------------------------------------------

PIX = ("00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
       "5913Fulano de Tal6008BRASILIA62070503***63041D3D")

#: A phone in every form a log line may carry it, and what must be left of it.
PHONE_FORMS = [
    ("+5511987654321", "+55 11 *****-4321"),
    ("+55 11 98765-4321", "+55 11 *****-4321"),
    ("+55 (11) 9 8765-4321", "+55 11 *****-4321"),
    ("5511987654321", "55 11 *****-4321"),
    ("551134567890", "55 11 *****-7890"),
    ("(11) 98765-4321", "(11) *****-4321"),
    ("(11)987654321", "(11) *****-4321"),
    ("(11) 3456-7890", "(11) *****-7890"),
    ("11 98765-4321", "(11) *****-4321"),
    ("5511987654321@s.whatsapp.net", "*****4321@s.whatsapp.net"),
    ("5511987654321:12@s.whatsapp.net", "*****4321@s.whatsapp.net"),
    ("5511987654321@c.us", "*****4321@c.us"),
    ("true_5511987654321@c.us_3EB0AB12", "true_55 11 *****-4321@c.us_3EB0AB12"),
]


def _logged(**fields) -> dict:
    """One JSON log line, as configure_logging writes it."""
    stream = RecordingStream()
    saved = sys.stderr
    sys.stderr = stream
    before = structlog.get_config()
    try:
        configure_logging(log_format="json", level="INFO")
        structlog.get_logger("test").warning("masked", **fields)
    finally:
        structlog.configure(**before)
        sys.stderr = saved
    assert len(stream.writes) == 1, stream.writes
    return json.loads(stream.writes[0])


@pytest.mark.parametrize(("phone", "masked"), PHONE_FORMS)
def test_a_phone_in_any_form_is_masked_in_free_text_and_nested_fields(phone, masked):
    line = _logged(note=f"replied from {phone} today", detail={"event": {"from": phone, "to": [phone]}},
                   phones=(phone,), event_text=phone)
    text = json.dumps(line, ensure_ascii=False)
    digits = "".join(c for c in phone.split("@")[0].split(":")[0] if c.isdigit())
    assert digits[-8:-4] not in text, text  # the hidden middle of the number
    assert line["note"] == f"replied from {masked} today"
    assert line["detail"] == {"event": {"from": masked, "to": [masked]}}
    assert line["phones"] == [masked] and line["event_text"] == masked


def test_pix_codes_in_free_text_keep_only_their_start():
    line = _logged(note=f"pague com {PIX} obrigado", cut=f"code {PIX[:40]}... end", codigo_pix=PIX,
                   nested=[{"text": f"PIX: {PIX}"}])
    text = json.dumps(line, ensure_ascii=False)
    assert PIX[8:30] not in text and "Fulano" not in text and "63041D3D" not in text
    assert line["note"] == "pague com 00020126… obrigado"
    assert line["cut"] == "code 00020126… end"
    assert line["codigo_pix"] == "00020126…"
    assert line["nested"] == [{"text": "PIX: 00020126…"}]


def test_a_gateway_error_body_loses_its_phones_pix_codes_and_secrets():
    body = json.dumps({"status": 400, "error": "Bad Request", "message": [
        {"jid": "5511987654321@s.whatsapp.net", "exists": False, "number": "5511987654321"}],
        "apikey": "evolution-global-key", "debug": f"db_password=hunter2; token: tok-123 Bearer abc.def pix {PIX}"})
    line = _logged(gateway_body=body, status=400)
    logged = line["gateway_body"]
    for secret in ("987654321", "evolution-global-key", "hunter2", "tok-123", "abc.def", PIX[8:30]):
        assert secret not in logged, (secret, logged)
    assert "*****4321@s.whatsapp.net" in logged and '"apikey": "***"' in logged and "db_password=***" in logged


def test_fields_named_like_secrets_are_hidden_whole_at_any_depth():
    line = _logged(db_password="hunter2", access_token="abc", webhook_secret="s3cr3t", token="t",
                   options={"apikey": "k", "headers": {"Authorization": "Bearer zzz"}, "typing_ms": 1200},
                   deep=[[[[[[[[[["too deep"]]]]]]]]]], token_set=True, empty_secret="")
    assert line["db_password"] == line["access_token"] == line["webhook_secret"] == line["token"] == "***"
    assert line["options"] == {"apikey": "***", "headers": {"Authorization": "***"}, "typing_ms": 1200}
    assert "too deep" not in json.dumps(line)
    assert line["token_set"] is True and line["empty_secret"] == ""


def test_a_phone_logged_as_a_number_is_masked_and_other_numbers_are_not():
    line = _logged(phone=5511987654321, count=1732900000000, small=42, flag=True)
    assert line == {**line, "phone": "55 11 *****-4321", "count": 1732900000000, "small": 42, "flag": True}


def test_ordinary_text_is_left_alone():
    kept = ("2026-11-29T17:07:38.831290Z", "took 12.5 ms for 10 12345678 rows", "0c7078f7-20b1-4330-ac63-855035394799",
            "+00:00", "at 1732900000000 ms", "queue 42 paused: outside business hours")
    line = _logged(**{f"f{i}": text for i, text in enumerate(kept)})
    assert [line[f"f{i}"] for i in range(len(kept))] == list(kept)
