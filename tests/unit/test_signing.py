"""Tests for billing.domain.signing."""
from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import pytest

import billing.domain.signing
from billing.domain.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    SECRET_PREFIX,
    InvalidSignature,
    generate_secret,
    headers_for,
    sign,
    verify,
)

#: The published Standard Webhooks test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"event": "bill.paid", "bill_id": 42, "valor": "R$ 150,00", "nome": "Jos\xc3\xa9"}'


def spec_headers() -> dict[str, str]:
    return {"webhook-id": SPEC_MSG_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE}


def test_generate_secret_is_prefixed_base64_of_a_random_key():
    secret = generate_secret()

    assert secret.startswith(SECRET_PREFIX)
    key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    assert 24 <= len(key) <= 32
    assert generate_secret() != secret


def test_round_trip():
    secret = generate_secret()
    headers = headers_for(secret=secret, msg_id="msg_1", body=BODY, timestamp=NOW)

    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(NOW)
    verify(secret=secret, headers=headers, body=BODY, now=NOW)


def test_headers_default_to_the_current_time():
    secret = generate_secret()
    headers = headers_for(secret=secret, msg_id="msg_1", body=BODY)

    verify(secret=secret, headers=headers, body=BODY)


def test_signature_is_the_spec_algorithm_computed_by_hand():
    secret = generate_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = b"msg_42." + str(NOW).encode() + b"." + BODY
    expected = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()

    assert sign(secret=secret, msg_id="msg_42", timestamp=NOW, body=BODY) == expected
    # Text bodies are signed as their UTF-8 bytes.
    assert sign(secret=secret, msg_id="msg_42", timestamp=NOW, body=BODY.decode("utf-8")) == expected


def test_published_test_vector():
    assert sign(secret=SPEC_SECRET, msg_id=SPEC_MSG_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY) == SPEC_SIGNATURE
    assert headers_for(secret=SPEC_SECRET, msg_id=SPEC_MSG_ID, body=SPEC_BODY.encode(), timestamp=SPEC_TIMESTAMP) == (
        spec_headers()
    )
    verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP)
    verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY.encode(), now=SPEC_TIMESTAMP)


def test_secret_without_prefix_is_accepted_like_the_reference_libraries():
    assert sign(secret=SPEC_SECRET.removeprefix("whsec_"), msg_id=SPEC_MSG_ID, timestamp=SPEC_TIMESTAMP,
                body=SPEC_BODY) == SPEC_SIGNATURE


@pytest.mark.parametrize(
    "body",
    [b'{"test": 2432232315}', b'{"test":2432232314}', b'{"test": 2432232314} ', b""],
    ids=["changed", "reserialized", "trailing-space", "empty"],
)
def test_tampered_body_is_rejected(body):
    with pytest.raises(InvalidSignature, match="no matching v1 signature"):
        verify(secret=SPEC_SECRET, headers=spec_headers(), body=body, now=SPEC_TIMESTAMP)


def test_changed_id_or_timestamp_is_rejected():
    headers = spec_headers() | {"webhook-id": "msg_other"}
    with pytest.raises(InvalidSignature, match="no matching"):
        verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)

    headers = spec_headers() | {"webhook-timestamp": str(SPEC_TIMESTAMP + 1)}
    with pytest.raises(InvalidSignature, match="no matching"):
        verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)


def test_wrong_secret_is_rejected():
    with pytest.raises(InvalidSignature, match="no matching"):
        verify(secret=generate_secret(), headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!", "whsec_abc", "", 123])
def test_bad_secret(secret):
    with pytest.raises(InvalidSignature, match="bad secret"):
        verify(secret=secret, headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP)
    with pytest.raises(ValueError):
        sign(secret=secret, msg_id="msg_1", timestamp=NOW, body=BODY)


@pytest.mark.parametrize(
    "now, reason",
    [
        (SPEC_TIMESTAMP + DEFAULT_TOLERANCE_SECONDS + 1, "timestamp too old"),
        (SPEC_TIMESTAMP + 86_400, "timestamp too old"),
        (SPEC_TIMESTAMP - DEFAULT_TOLERANCE_SECONDS - 1, "timestamp too new"),
        (SPEC_TIMESTAMP - 3_600, "timestamp too new"),
    ],
)
def test_timestamp_outside_tolerance(now, reason):
    with pytest.raises(InvalidSignature, match=reason):
        verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY, now=now)


@pytest.mark.parametrize("offset", [-DEFAULT_TOLERANCE_SECONDS, 0, DEFAULT_TOLERANCE_SECONDS])
def test_timestamp_at_the_edges_of_tolerance(offset):
    verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP + offset)


def test_custom_tolerance():
    verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP + 3_000, tolerance=3_600)
    with pytest.raises(InvalidSignature, match="too old"):
        verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP + 11, tolerance=10)
    with pytest.raises(ValueError):
        verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP, tolerance=-1)


@pytest.mark.parametrize("timestamp", ["", "abc", "1614265330.0", "-1614265330", "1.6e9", "0x6038"])
def test_malformed_timestamp(timestamp):
    headers = spec_headers() | {"webhook-timestamp": timestamp}

    with pytest.raises(InvalidSignature, match="webhook-timestamp"):
        verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(missing):
    headers = {name: value for name, value in spec_headers().items() if name != missing}

    with pytest.raises(InvalidSignature, match=f"missing header {missing}"):
        verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)


def test_empty_header_counts_as_missing():
    headers = spec_headers() | {"webhook-signature": "  "}

    with pytest.raises(InvalidSignature, match="missing header webhook-signature"):
        verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)


def test_no_headers_at_all():
    with pytest.raises(InvalidSignature, match="missing header webhook-id"):
        verify(secret=SPEC_SECRET, headers={}, body=SPEC_BODY, now=SPEC_TIMESTAMP)


@pytest.mark.parametrize(
    "signature_header",
    [
        f"v1,bm90IG15IHNpZ25hdHVyZQ== {SPEC_SIGNATURE}",
        f"{SPEC_SIGNATURE} v1,bm90IG15IHNpZ25hdHVyZQ==",
        f"v1a,c2lnbmVkIHdpdGggZWQyNTUxOQ== {SPEC_SIGNATURE}",
        f"  v1,bm90IG15IHNpZ25hdHVyZQ==   {SPEC_SIGNATURE}  ",
    ],
    ids=["valid-last", "valid-first", "other-version", "extra-spaces"],
)
def test_one_valid_signature_among_several_is_enough(signature_header):
    headers = spec_headers() | {"webhook-signature": signature_header}

    verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)


def test_rotation_both_secrets_verify():
    old, new = generate_secret(), generate_secret()
    signatures = " ".join(sign(secret=secret, msg_id="msg_1", timestamp=NOW, body=BODY) for secret in (old, new))
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": signatures}

    verify(secret=old, headers=headers, body=BODY, now=NOW)
    verify(secret=new, headers=headers, body=BODY, now=NOW)
    with pytest.raises(InvalidSignature, match="no matching"):
        verify(secret=generate_secret(), headers=headers, body=BODY, now=NOW)


@pytest.mark.parametrize(
    "signature_header",
    ["v1,bm90IG15IHNpZ25hdHVyZQ== v1,YW5vdGhlcg==", SPEC_SIGNATURE.replace("v1,", "v2,"),
     SPEC_SIGNATURE.removeprefix("v1,"), "v1,", "v1,ñão-ascii"],
    ids=["all-wrong", "wrong-version", "no-version", "empty-signature", "non-ascii"],
)
def test_no_valid_signature(signature_header):
    headers = spec_headers() | {"webhook-signature": signature_header}

    with pytest.raises(InvalidSignature, match="no matching v1 signature"):
        verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)


@pytest.mark.parametrize("case", [str.upper, str.title, lambda name: name.replace("webhook", "Webhook")])
def test_header_names_are_case_insensitive(case):
    headers = {case(name): value for name, value in spec_headers().items()}

    verify(secret=SPEC_SECRET, headers=headers, body=SPEC_BODY, now=SPEC_TIMESTAMP)


def test_float_timestamp_is_refused_when_signing():
    with pytest.raises(TypeError):
        sign(secret=SPEC_SECRET, msg_id=SPEC_MSG_ID, timestamp=float(SPEC_TIMESTAMP), body=SPEC_BODY)


def test_invalid_signature_message_says_why():
    with pytest.raises(InvalidSignature) as excinfo:
        verify(secret=SPEC_SECRET, headers=spec_headers(), body=SPEC_BODY, now=SPEC_TIMESTAMP + 1_000)

    assert str(excinfo.value) == "timestamp too old: 1000s before now, tolerance 300s"


def test_module_runs_standalone(tmp_path):
    # An ERP copies this one file; it must work with nothing but Python.
    copy = tmp_path / "standard_webhooks_verify.py"
    copy.write_text(Path(billing.domain.signing.__file__).read_text())
    script = tmp_path / "receiver.py"
    script.write_text(
        "import standard_webhooks_verify as s\n"
        f"s.verify(secret={SPEC_SECRET!r}, headers={spec_headers()!r}, body={SPEC_BODY!r}, now={SPEC_TIMESTAMP})\n"
        "print('ok')\n"
    )

    # -S: no site-packages (so not this project either), -E: no PYTHONPATH;
    # only the standard library and the copied file are importable.
    result = subprocess.run(
        [sys.executable, "-S", "-E", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
