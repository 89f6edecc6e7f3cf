"""Another Python service using the product as a library: no HTTP. The
snippet is the README's "Python use (no HTTP)" section: ``import tasks``,
``tasks.setup()``, then the campaigns API and ``tasks.start_queue``."""
from __future__ import annotations

import json

LIBRARY_USE = '''
import json
import tasks                                    # declares the actors: no environment, database or broker yet
tasks.setup()                                   # DATABASE_URL, BROKER_URL, LOG_FORMAT...: wires this process
from billing.campaigns import create_campaign
from billing.tenants import get_tenant

created = create_campaign(
    get_tenant("{tenant}"),
    template_type="overdue",
    request={{"external_id": "lib-1", "contacts": [
        {{"nome_cliente": "Maria", "telefone": "(11) 98888-0001", "valor": 89.9, "data_vencimento": "2025-02-01"}},
        {{"nome_cliente": "José", "telefone": "11 8888-0002", "valor": "R$ 10,00", "data_vencimento": "01/02/2025"}},
    ]}},
)
{enqueue}
print(json.dumps({{"queue_id": created.queue_id, "campaign_id": created.campaign_id}}))
'''


def test_another_service_creates_and_enqueues_without_http(stack):
    key = stack.create_tenant("library", messages_per_minute=60_000)
    # With RabbitMQ the service enqueues the first dispatch itself. The embedded
    # broker lives inside `billing run`, out of reach: there the scheduler finds
    # the new queue in the database, which is the source of truth.
    enqueue = "tasks.start_queue(created.queue_id)" if stack.kind == "production" else ""
    out = stack.python(LIBRARY_USE.format(tenant="library", enqueue=enqueue)).stdout.strip().splitlines()[-1]
    created = json.loads(out)
    status = stack.wait_for(created["queue_id"], key=key, timeout=60)
    assert status["contacts_sent"] == 2
    listing = stack.get(f"campaign/{created['campaign_id']}/contacts", key=key).json()["results"]
    # the mobile given without its 9 is normalized with it
    assert [c["telefone"] for c in listing] == ["+5511988880001", "+5511988880002"]
    outbox = {m["contact_id"]: m for m in stack.outbox() if m["tenant"] == "library"}
    assert sorted(outbox) == sorted(c["id"] for c in listing)
    maria = outbox[listing[0]["id"]]
    assert maria["phone"] == "+5511988880001" and "Maria" in maria["text"] and "R$ 89,90" in maria["text"]
    assert maria["sent_at"].endswith("Z") and maria["provider_message_id"]
