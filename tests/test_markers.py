"""The service markers cannot be forgotten: a test that reaches PostgreSQL or
RabbitMQ without its marker fails (tests/conftest.py), whether the service is
up or down, and ``-m "not postgres and not rabbitmq"`` deselects every test
that needs one. Checked on a throwaway test module run by a pytest subprocess
with tests/conftest.py and the services pointed at a closed port."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Where nothing listens: the services are down for the subprocess.
CLOSED_POSTGRES = "postgresql://postgres@127.0.0.1:1/postgres"
CLOSED_RABBITMQ = "amqp://guest:guest@127.0.0.1:1/%2F"

SAMPLE = '''
import pytest
from tests.conftest import postgres_database

def test_unmarked_fixture_by_name(request):
    request.getfixturevalue("postgres_database_url")

def test_unmarked_database_in_the_body():
    with postgres_database():
        pass

@pytest.mark.postgres
def test_marked_database_in_the_body():
    with postgres_database():
        pass

def test_fixture_marks_it(rabbitmq_url):
    pass

def test_db_marks_its_postgres_parameter(db):
    pass

def test_no_service():
    pass
'''


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403 - the suite's fixtures and hooks\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "BILLING_TEST_POSTGRES_URL": CLOSED_POSTGRES,
           "BILLING_TEST_RABBITMQ_URL": CLOSED_RABBITMQ}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-rA", "-q",
                           "-W", "ignore::pytest.PytestUnknownMarkWarning", str(tmp_path), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def _outcomes(output: str) -> dict[str, str]:
    """Test name -> PASSED/FAILED/SKIPPED/ERROR from pytest's -rA summary."""
    found = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR") and "::" in rest:
            found[rest.split("::", 1)[1].split(" ", 1)[0]] = word
    return found


def test_an_unmarked_test_that_reaches_a_service_fails_instead_of_skipping(tmp_path):
    result = _pytest(tmp_path)
    outcomes = _outcomes(result.stdout)

    assert outcomes["test_unmarked_fixture_by_name"] == "FAILED", result.stdout
    assert outcomes["test_unmarked_database_in_the_body"] == "FAILED", result.stdout
    assert result.stdout.count("but is not marked") >= 2, result.stdout
    assert outcomes["test_no_service"] == outcomes["test_db_marks_its_postgres_parameter[sqlite]"] == "PASSED"
    assert result.stdout.count("SKIPPED") == 3, result.stdout  # the marked ones: skipped, as usual


def test_not_postgres_and_not_rabbitmq_leaves_only_tests_that_run(tmp_path):
    result = _pytest(tmp_path, "-m", "not postgres and not rabbitmq")
    outcomes = _outcomes(result.stdout)

    assert "SKIPPED" not in result.stdout, result.stdout
    assert "test_marked_database_in_the_body" not in outcomes
    assert "test_fixture_marks_it" not in outcomes
    assert "test_db_marks_its_postgres_parameter[postgres]" not in outcomes
    assert outcomes["test_db_marks_its_postgres_parameter[sqlite]"] == "PASSED"
