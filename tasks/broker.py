"""Which broker carries the wake-ups: RabbitMQ in production, an in-process
StubBroker in the embedded mode.

With RabbitMQ down, Dramatiq's consumer threads (one per queue and delay
queue) each reconnect every few seconds, and pika logs every refused
connection with a traceback: ~2,700 lines in 40 s for two worker processes.
Here the consumers of one process wait out an outage together: one of them
tries to reconnect at a time, after a backoff growing from
:data:`RECONNECT_BACKOFF_MIN_SECONDS` to :data:`RECONNECT_BACKOFF_MAX_SECONDS`,
and each attempt is one log line.
"""
from __future__ import annotations

import threading
import time

import dramatiq
import pika
import structlog
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed

from billing.config import Settings
from tasks.middleware import DatabaseConnection, LogContext, QuietConsumerRestarts, WorkerHeartbeat

log = structlog.get_logger(__name__)

#: Wait before the first reconnect attempt after a failed one (seconds);
#: doubled after each failure up to :data:`RECONNECT_BACKOFF_MAX_SECONDS`.
RECONNECT_BACKOFF_MIN_SECONDS = 1.0
#: Longest wait between two reconnect attempts: a broker back from an outage
#: is consumed again within this long.
RECONNECT_BACKOFF_MAX_SECONDS = 15.0
#: How often a consumer waiting for its turn checks that its worker is not
#: stopping (a stop must not wait for the backoff to end).
TURN_POLL_SECONDS = 0.5
#: How long a reachability probe (:func:`broker_reachable`) waits for RabbitMQ.
PROBE_TIMEOUT_SECONDS = 5.0


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


class BrokerOutage:
    """The broker connection state shared by one process's consumers.

    A consumer whose connection breaks reports :meth:`lost`; every consumer
    asks :meth:`wait_for_turn` before connecting. While the broker is down,
    only one consumer at a time tries (the others wait for its result), and
    only once the backoff after the previous failure is over.

    Parameters:
      backoff_min, backoff_max: bounds (seconds) of the wait between attempts.
    """

    def __init__(self, *, backoff_min: float = RECONNECT_BACKOFF_MIN_SECONDS,
                 backoff_max: float = RECONNECT_BACKOFF_MAX_SECONDS) -> None:
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._condition = threading.Condition()
        self._down_since: float | None = None
        self._attempts = 0
        self._next_attempt_at = 0.0
        self._prober: int | None = None  # ident of the thread trying now

    @property
    def down(self) -> bool:
        """Whether the last connection attempt or connection failed."""
        return self._down_since is not None

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts in a row.

        Parameters:
          attempts: failed attempts so far (1 or more).
        """
        return min(self.backoff_max, self.backoff_min * 2 ** (attempts - 1))

    def lost(self, error: BaseException) -> None:
        """A working connection broke (logged once per outage).

        Parameters:
          error: what the consumer raised.
        """
        with self._condition:
            if self._down_since is not None:
                return
            self._start_outage()
            log.warning("broker connection lost; reconnecting", error=_describe(error))

    def wait_for_turn(self, *, wanted=lambda: True) -> None:
        """Return when this thread may connect: at once while the broker is
        up, else when no other thread is trying and the backoff is over.

        Parameters:
          wanted: called while waiting; False (the worker is stopping) ends
            the wait with :class:`ConnectionClosed`.
        """
        with self._condition:
            while self._down_since is not None:
                now = time.monotonic()
                if self._prober is None and now >= self._next_attempt_at:
                    self._prober = threading.get_ident()
                    return
                if not wanted():
                    raise ConnectionClosed("the worker is stopping while the broker is unreachable")
                wait = self._next_attempt_at - now if self._prober is None else TURN_POLL_SECONDS
                self._condition.wait(timeout=max(0.01, min(wait, TURN_POLL_SECONDS)))

    def attempt_failed(self, error: BaseException) -> None:
        """This thread's connection attempt failed: one line if it was the
        outage's first failure or the turn's attempt, silence otherwise.

        Parameters:
          error: what connecting raised.
        """
        with self._condition:
            prober = self._prober == threading.get_ident()
            if self._down_since is None:
                self._start_outage()
            elif not prober:
                return  # a consumer that tried before it knew; the turn's attempt reports
            self._prober = None
            self._attempts += 1
            delay = self.backoff(self._attempts)
            self._next_attempt_at = time.monotonic() + delay
            log.warning("broker unreachable", attempt=self._attempts, retry_in=delay,
                        down_for=round(time.monotonic() - self._down_since, 1), error=_describe(error))
            self._condition.notify_all()

    def attempt_succeeded(self) -> None:
        """A connection was made: the others may connect at once."""
        with self._condition:
            if self._down_since is None:
                return
            log.info("broker reconnected", attempts=self._attempts + 1,
                     down_for=round(time.monotonic() - self._down_since, 1))
            self._down_since = None
            self._prober = None
            self._condition.notify_all()

    def _start_outage(self) -> None:
        self._down_since = time.monotonic()
        self._attempts = 0
        self._next_attempt_at = self._down_since


class _OutageAwareConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, reporting a broken connection."""

    def __next__(self):
        try:
            return super().__next__()
        except ConnectionClosed as exc:
            self.broker.outage.lost(exc)
            raise


def _consumer_running() -> bool:
    # Called in a Dramatiq ConsumerThread, whose ``running`` turns False on stop.
    return getattr(threading.current_thread(), "running", True)


class ReconnectingRabbitmqBroker(RabbitmqBroker):
    """RabbitMQ broker whose consumers reconnect through one
    :class:`BrokerOutage` per process (one attempt at a time, with backoff)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.outage = BrokerOutage()

    @property
    def consumer_class(self):
        return _OutageAwareConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        """Dramatiq's consume, after this thread's turn (see :class:`BrokerOutage`).

        Parameters:
          queue_name: the queue to consume.
          prefetch: messages to prefetch.
          timeout: idle timeout (ms).
        """
        self.outage.wait_for_turn(wanted=_consumer_running)
        try:
            consumer = super().consume(queue_name, prefetch=prefetch, timeout=timeout)
        except BaseException as exc:  # whatever it was, the turn must pass on
            self.outage.attempt_failed(exc)
            raise
        self.outage.attempt_succeeded()
        return consumer


def broker_reachable(broker: dramatiq.Broker) -> bool:
    """Whether a new connection to ``broker`` opens now (always True for the
    in-process StubBroker).

    Parameters:
      broker: the process's broker.
    """
    if not isinstance(broker, RabbitmqBroker):
        return True
    parameters = broker.parameters[0] if isinstance(broker.parameters, list) else broker.parameters
    probe = pika.ConnectionParameters(
        host=parameters.host, port=parameters.port, virtual_host=parameters.virtual_host,
        credentials=parameters.credentials, ssl_options=parameters.ssl_options, connection_attempts=1,
        socket_timeout=PROBE_TIMEOUT_SECONDS, blocked_connection_timeout=PROBE_TIMEOUT_SECONDS,
    )
    try:
        pika.BlockingConnection(probe).close()
    except Exception:  # pika raises many kinds; any of them means "not now"
        return False
    return True


#: pika's connection settings unless BROKER_URL sets its own: a RabbitMQ that
#: drops packets (rather than refusing) must not hold a web request or a
#: publish for pika's defaults of minutes.
CONNECTION_DEFAULTS = {"socket_timeout": "5", "blocked_connection_timeout": "30"}


def with_connection_timeouts(url: str) -> str:
    """``url`` with :data:`CONNECTION_DEFAULTS` for the parameters it does not set."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name, value in CONNECTION_DEFAULTS.items():
        query.setdefault(name, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Create the broker ``settings`` ask for, with the middleware; it holds
    no actor yet and is not Dramatiq's global one (:func:`tasks.setup` does
    both). Nothing connects until the broker is used.

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
        broker = ReconnectingRabbitmqBroker(url=with_connection_timeouts(settings.broker_url), confirm_delivery=True)
        broker.add_middleware(QuietConsumerRestarts())
    broker.add_middleware(DatabaseConnection())
    broker.add_middleware(LogContext())
    broker.add_middleware(WorkerHeartbeat())
    return broker
