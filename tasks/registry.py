"""Where the actors are declared before a process is wired.

Dramatiq binds an actor to a broker when it is decorated, and without one it
takes the global broker, creating a RabbitMQ broker on 127.0.0.1 if none is
set. The actors are declared on :data:`REGISTRY` instead: an in-memory broker
that is not Dramatiq's global one, so importing them connects to nothing and
configures nothing. :func:`tasks.setup` moves each of them to the process's
real broker; until then, sending a message fails loudly rather than landing in
memory where no worker will ever read it.
"""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker


class UnwiredBroker(StubBroker):
    """A broker that holds actor declarations and refuses messages.

    Its middleware is Dramatiq's default set, so the actors' options
    (``retry_when``, ``min_backoff``, ``time_limit``...) are accepted.
    """

    def enqueue(self, message, *, delay=None):
        """Refuse: this process has not called :func:`tasks.setup`.

        Parameters:
          message: the message an actor was asked to send.
          delay: its delay (ms), unused.
        """
        raise RuntimeError(
            f"cannot send {message.actor_name}: call tasks.setup() first, "
            "it builds the broker the actors send to (from BROKER_URL)"
        )


#: The actors of :mod:`tasks.actors` are declared here (``broker=REGISTRY``).
REGISTRY = UnwiredBroker()


def declared_actors() -> list[dramatiq.Actor]:
    """Every actor of :mod:`tasks.actors`, in declaration order."""
    import tasks.actors  # noqa: F401  (declaring the actors fills the registry)

    return list(REGISTRY.actors.values())


def queue_names() -> list[str]:
    """The queues the actors use (without their delay and dead-letter twins), sorted."""
    return sorted({actor.queue_name for actor in declared_actors()})
