from __future__ import annotations

import pytest

from tests.conftest import postgres_database
from tests.e2e.stack import Stack, purge_rabbitmq


@pytest.fixture(scope="module", params=[
    "embedded", pytest.param("production", marks=[pytest.mark.postgres, pytest.mark.rabbitmq])])
def stack(request, tmp_path_factory):
    """A running deployment of each kind, for the module's tests."""
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        env = {"DATABASE_URL": f"sqlite:///{workdir}/billing.sqlite3", "BROKER_URL": ""}
        running = Stack(kind="embedded", env=env, workdir=workdir)
        running.start()
        yield running
        running.stop()
        return
    rabbitmq_url = request.getfixturevalue("rabbitmq_url")
    with postgres_database() as database_url:
        purge_rabbitmq(rabbitmq_url)
        running = Stack(kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": rabbitmq_url}, workdir=workdir)
        try:
            running.start()
            yield running
        finally:
            running.stop()
