"""The hourly limit of a key holds across processes: gunicorn runs two
workers in the production stack, and both count in the database."""
from __future__ import annotations

import collections
import json
from concurrent.futures import ThreadPoolExecutor

LIMIT = 20
REQUESTS = 45


def test_hourly_limit_holds_across_web_workers(stack):
    stack.create_tenant("limited", messages_per_minute=60)
    key = stack.cli("apikey", "create", "--tenant", "limited", "--hourly-limit", str(LIMIT)).stdout.strip().splitlines()[-1]
    missing_queue = "queue/00000000-0000-0000-0000-000000000000/status"

    def call(_):
        return stack.get(missing_queue, key=key)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(call, range(REQUESTS)))
    statuses = collections.Counter(a.status_code for a in answers)
    assert statuses == {404: LIMIT, 429: REQUESTS - LIMIT}, statuses
    limited = next(a for a in answers if a.status_code == 429)
    assert limited.headers["X-RateLimit-Limit"] == str(LIMIT) and limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["Retry-After"]) >= 1 and limited.json()["success"] is False
    if stack.kind == "production":
        # both gunicorn workers answered, so the limit was shared, not per process
        answering = set()
        for line in (stack.workdir / "web.log").read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # two workers' lines can interleave in the shared file
                continue
            if record.get("event") == "request" and record.get("tenant") == "limited":
                answering.add(record["pid"])
        assert len(answering) == 2
