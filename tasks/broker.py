"""Which broker carries the wake-ups: RabbitMQ in production, an in-process
StubBroker in the embedded mode."""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker

from billing.config import Settings
from tasks.middleware import DatabaseConnection, LogContext


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Create the broker ``settings`` ask for and make it Dramatiq's global one.

    Parameters:
      settings: BROKER_URL empty means the embedded StubBroker.
    """
    if settings.embedded_broker:
        broker: dramatiq.Broker = StubBroker()
        # Dead-lettered messages are reported by the actors' logs; joining in
        # tests must not raise for them.
        broker.fail_fast_default = False
    else:
        # confirm_delivery: a publish returns only once RabbitMQ has the
        # message, so "enqueued after commit" means it will not be lost.
        broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    broker.add_middleware(DatabaseConnection())
    broker.add_middleware(LogContext())
    dramatiq.set_broker(broker)
    return broker
