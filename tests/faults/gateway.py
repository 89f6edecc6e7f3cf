"""A fake Evolution API v2 gateway for the fault suite: several instances on
one server, counting what it accepts per phone number, and the gateway
faults of the field.

It is :class:`tests.fakes.evolution.FakeEvolution` (imported, not copied:
its answers copy a real Evolution 2.3.6), with:

* any of several instance names (one per Evolution instance of the tenant);
* :attr:`FaultyEvolution.accepted`: messages accepted per number (digits), so
  a message sent twice is counted by the gateway, whatever the database says;
* :meth:`fail_fraction`: answer 500 to a fraction of sends (a seeded draw);
* :meth:`hang_sends` / :meth:`hang_fraction`: accept the next sends, or a
  fraction of them (counted: the message went out), and never answer, until
  the client gives up;
* :meth:`refuse_connections`: stop listening (connections are refused), and
  :meth:`listen_again` on the same port;
* ``POST /chat/findMessages/{instance}``, as Evolution v2 answers it
  (``{"messages": {"total", "pages", "currentPage", "records": [...]}}``),
  so a sender may check whether an unanswered send went out (FakeEvolution's
  own answer when it has one, hung messages included: they were accepted).

Every answer closes its connection (HTTP/1.0), so a refused period refuses
every request, not only those on new connections.
"""
from __future__ import annotations

import collections
import random
import threading
import time
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.fakes import SHUTDOWN_POLL_SECONDS, SentMessage, _QuietHandler, digits, json_response
from tests.fakes.evolution import FakeEvolution, _envelope

#: The error text of injected 500s: not "Connection Closed" (the instance is
#: not down; the server failed this one request).
INJECTED_ERROR = "Internal Server Error"
#: How long a hung send is held at most (far above any client timeout); the
#: handler thread is freed at once when the fake stops.
HANG_SECONDS = 300.0


class _ClosingHandler(_QuietHandler):
    """HTTP/1.0: one request per connection (no keep-alive survives a refusal)."""

    protocol_version = "HTTP/1.0"


class _Server:
    def __init__(self, app: Any, *, host: str, port: int) -> None:
        self._server = make_server(host, port, app, threaded=True, request_handler=_ClosingHandler)
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()  # the listening socket: new connections are refused
        self._thread.join()


class FaultyEvolution(FakeEvolution):
    """A fake Evolution serving ``instances`` with injectable faults.

    Parameters:
      api_key: the key every call must carry.
      instances: the Evolution instance names it knows.
      seed: seeds the draws of failures and hangs (a run is repeatable).
    """

    def __init__(self, *, api_key: str, instances: list[str], seed: int = 8) -> None:
        self._local = threading.local()
        self._sent_at: dict[str, int] = {}  # message id -> unix time accepted
        self.instance_names = tuple(instances)
        super().__init__(api_key=api_key, instance=instances[0])
        self._random = random.Random(seed)
        self._release = threading.Event()
        self._fail_fraction = 0.0
        self._hang_fraction = 0.0
        self._hang_limit = 0
        self._hang_due = 0
        self.listening = False
        #: number (digits) -> messages accepted (answered 201, or hung after acceptance)
        self.accepted: collections.Counter = collections.Counter()
        #: number (digits) -> sendText requests received (accepted or not)
        self.send_requests: collections.Counter = collections.Counter()
        self.injected_500 = 0
        self.hung = 0
        self.refused_periods: list[tuple[float, float]] = []

    # The base class compares a request's instance with ``self.instance``: make
    # that the instance of the request being handled (one per thread).
    @property
    def instance(self) -> str:
        return getattr(self._local, "instance", None) or self._default_instance

    @instance.setter
    def instance(self, value: str) -> None:
        self._default_instance = value

    # lifecycle
    def start(self) -> FaultyEvolution:
        self._stopping.clear()
        self._server = _Server(self._wsgi, host=self._host, port=self._port)
        self._port = self._server.port  # listen again on the same port
        self._server.start()
        self.listening = True
        return self

    def stop(self) -> None:
        self._release.set()  # frees hung handlers
        super().stop()
        self.listening = False

    def refuse_connections(self) -> None:
        """Stop listening: connections are refused until :meth:`listen_again`.
        Hung requests stay hung."""
        with self._lock:
            if not self.listening:
                return
            self._server.stop()
            self._server = None
            self.listening = False
            self._refused_at = time.monotonic()

    def listen_again(self) -> None:
        with self._lock:
            if self.listening:
                return
            self._server = _Server(self._wsgi, host=self._host, port=self._port)
            self._server.start()
            self.listening = True
            self.refused_periods.append((self._refused_at, time.monotonic()))

    # fault switches
    def fail_fraction(self, fraction: float) -> None:
        """Answer 500 to this fraction of sends (0 turns it off)."""
        with self._lock:
            self._fail_fraction = fraction

    def hang_fraction(self, fraction: float, *, limit: int = 1_000_000) -> None:
        """Accept this fraction of sends and never answer them (at most ``limit`` in all)."""
        with self._lock:
            self._hang_fraction, self._hang_limit = fraction, limit

    def hang_sends(self, count: int) -> None:
        """The next ``count`` sends not answered 500 are accepted and never answered."""
        with self._lock:
            self._hang_due = count

    def clear_faults(self) -> None:
        self.fail_fraction(0.0)
        self.hang_fraction(0.0)
        self.hang_sends(0)

    # figures
    def duplicates(self) -> int:
        """Messages accepted beyond the first, over every number."""
        return sum(n - 1 for n in self.accepted.values() if n > 1)

    # serving
    def handle(self, request: Request, body: Any) -> Response:
        route, _, name = request.path.rpartition("/")
        if name in self.instance_names:
            self._local.instance = name
        try:
            if (request.method, route) == ("POST", "/message/sendText") and name in self.instance_names:
                return self._faulty_send(request, body)
            if (request.method, route) == ("POST", "/chat/findMessages") and name in self.instance_names \
                    and not hasattr(FakeEvolution, "_find_messages"):
                return self._fallback_find_messages(body)
            return super().handle(request, body)
        finally:
            self._local.instance = None

    def _faulty_send(self, request: Request, body: Any) -> Response:
        number = digits(str((body or {}).get("number", "") if isinstance(body, dict) else "").partition("@")[0])
        with self._lock:
            self.send_requests[number] += 1
            fail = self._fail_fraction and self._random.random() < self._fail_fraction
            hang = not fail and (self._hang_due > 0 or (
                self._hang_fraction and self.hung < self._hang_limit and self._random.random() < self._hang_fraction))
            if hang and self._hang_due > 0:
                self._hang_due -= 1
            if fail:
                self.injected_500 += 1
            if hang:
                self.hung += 1
        if fail:
            return _envelope(500, INJECTED_ERROR)
        response = super().handle(request, body)
        if hang and response.status_code < 300:
            # Accepted (recorded and counted), but the answer never comes.
            self._release.wait(HANG_SECONDS)
        return response

    def record_message(self, message: SentMessage) -> None:
        super().record_message(message)
        with self._lock:
            self.accepted[digits(message.chat_id.partition("@")[0])] += 1
            self._sent_at[message.id] = int(time.time())

    def _fallback_find_messages(self, body: Any) -> Response:
        """Evolution v2's chat/findMessages (the messages of one chat, newest
        first), for a FakeEvolution that does not answer it itself."""
        where = (body or {}).get("where") if isinstance(body, dict) else None
        key = (where or {}).get("key") if isinstance(where, dict) else None
        remote = (key or {}).get("remoteJid") if isinstance(key, dict) else None
        wanted = digits(str(remote or "").partition("@")[0])
        with self._lock:
            found = [m for m in self.messages if digits(m.chat_id.partition("@")[0]) == wanted] if wanted else []
            records = [{
                "id": f"cm{m.id.lower()}", "key": {"id": m.id, "fromMe": True, "remoteJid": m.chat_id},
                "pushName": "", "messageType": "conversation", "message": {"conversation": m.text},
                "messageTimestamp": self._sent_at.get(m.id, 0), "instanceId": "fdd65680-2660-42dc-b74f-2291d012c523",
                "source": "unknown", "contextInfo": None, "MessageUpdate": [],
            } for m in reversed(found)]
        return json_response({"messages": {"total": len(records), "pages": 1 if records else 0,
                                           "currentPage": 1, "records": records}})
