"""Local fake WhatsApp gateways: real HTTP servers that speak Evolution's and
WAHA's protocols, with switches for the failures the real ones show.

Each fake (:class:`tests.fakes.evolution.FakeEvolution`,
:class:`tests.fakes.waha.FakeWaha`) runs a werkzeug server on 127.0.0.1 in a
background thread::

    with FakeEvolution(api_key="k") as fake:
        fake.not_on_whatsapp("+5511911112222")
        ...  # point an instance at fake.url
        assert fake.delivered[0].chat_id == "551187654321@s.whatsapp.net"

Controls work from Python (methods below) or over HTTP, for fakes running in
another process (``python -m tests.fakes.evolution --port 8081``):

* ``POST /__fake__/control`` with any of ``state``, ``api_key``,
  ``not_on_whatsapp`` (list), ``without_nine`` (list), ``fail_next``,
  ``fail_every``, ``fail_status``, ``delay_seconds``, ``hang_next`` (with
  ``hang_seconds``), ``drop_next``, ``message_store`` and the fake's own keys;
* ``POST /__fake__/reset``; ``GET /__fake__/requests``; ``GET /__fake__/messages``.

:class:`WebhookReceiver` is a recording endpoint for the webhook helpers.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

#: Where fakes listen; port 0 lets the OS pick a free port.
LOCALHOST = "127.0.0.1"
ANY_PORT = 0
#: How often a server thread checks for shutdown (stopping a fake waits up to this).
SHUTDOWN_POLL_SECONDS = 0.02
#: Status of injected failures unless the test asks for another.
DEFAULT_FAIL_STATUS = 500
#: Path prefix of the control API (never recorded, never slowed down).
CONTROL_PREFIX = "/__fake__"
#: Seconds the webhook helpers wait for the receiving endpoint.
WEBHOOK_TIMEOUT_SECONDS = 10
#: Brazil's country code and the length of a mobile number with its 9 (55 + DDD + 9 digits).
BRAZIL_PREFIX = "55"
BRAZIL_MOBILE_LENGTH = 13
#: Index of the mobile 9 in 55 + DDD + 9XXXXXXXX.
MOBILE_NINE_INDEX = 4
#: How long a hung send holds its answer unless the test says (far beyond any client timeout).
DEFAULT_HANG_SECONDS = 60.0


def closed_port_url() -> str:
    """A local gateway URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, ANY_PORT))
        port = sock.getsockname()[1]
    return f"http://{LOCALHOST}:{port}"


def digits(phone: str) -> str:
    """``+55 (11) 98765-4321`` -> ``5511987654321``."""
    return "".join(char for char in str(phone) if char.isdigit())


def without_nine(number: str) -> str:
    """A Brazilian mobile's digits without the mobile 9 (others unchanged)."""
    number = digits(number)
    is_mobile = number.startswith(BRAZIL_PREFIX) and len(number) == BRAZIL_MOBILE_LENGTH
    if is_mobile and number[MOBILE_NINE_INDEX] == "9":
        return number[:MOBILE_NINE_INDEX] + number[MOBILE_NINE_INDEX + 1:]
    return number


@dataclass
class RecordedRequest:
    """One API request the fake received.

    Parameters:
      method: the HTTP method.
      path: the path, without the query string.
      query: the query string's parameters.
      headers: the request headers, names lower-cased (``apikey``, ``x-api-key``).
      json: the parsed JSON body (None when empty or not JSON).
    """

    method: str
    path: str
    query: dict
    headers: dict
    json: Any


@dataclass
class SentMessage:
    """A message the fake accepted.

    Parameters:
      chat_id: where the gateway sent it (JID or chatId).
      text: the message text.
      id: the provider message id the fake answered with.
      reached: False when it "went nowhere" (number not on WhatsApp, or a
        number registered without the 9 addressed with it).
      timestamp: when the fake accepted it.
    """

    chat_id: str
    text: str
    id: str
    reached: bool = True
    #: When the fake accepted it (seconds since the epoch): the recent-messages endpoints report it.
    timestamp: float = field(default_factory=time.time)


@dataclass
class _Controls:
    state: str
    api_key: str | None
    absent: set = field(default_factory=set)
    short: set = field(default_factory=set)
    fail_next: int = 0
    fail_every: int = 0
    fail_status: int = DEFAULT_FAIL_STATUS
    delay_seconds: float = 0.0
    sends: int = 0
    hang_next: int = 0
    hang_seconds: float = DEFAULT_HANG_SECONDS
    drop_next: int = 0
    message_store: bool = True


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """Tests read recorded requests; one log line per call is noise."""


class _Server:
    """A werkzeug server for ``app`` in a daemon thread."""

    def __init__(self, app: Callable, *, host: str, port: int) -> None:
        self._server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), daemon=True)
        self.url = f"http://{host}:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class FakeGateway:
    """What both fakes share: lifecycle, controls, recording, failure injection.

    Parameters:
      api_key: when set, calls with another key get 401; None accepts any.
      host: the interface to listen on.
      port: the port (0: any free one).
    """

    #: The state a fresh fake is in (the gateway's own word); subclasses set it.
    connected_state = ""
    #: The state :meth:`disconnect` switches to.
    disconnected_state = ""
    #: Every state :meth:`set_state` accepts.
    states: tuple[str, ...] = ()

    def __init__(self, *, api_key: str | None = None, host: str = LOCALHOST, port: int = ANY_PORT) -> None:
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._initial_key = api_key
        self._host, self._port = host, port
        self._server: _Server | None = None
        self.requests: list[RecordedRequest] = []
        self.messages: list[SentMessage] = []
        self.controls = _Controls(state=self.connected_state, api_key=api_key)

    # lifecycle
    def start(self) -> FakeGateway:
        self._stopping.clear()
        self._server = _Server(self._wsgi, host=self._host, port=self._port)
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in slow()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to configure as the instance's ``url``."""
        if self._server is None:
            raise RuntimeError("the fake is not started")
        return self._server.url

    # controls
    def reset(self) -> None:
        """Forget requests and messages; back to connected, no failures, the initial key."""
        with self._lock:
            self.requests.clear()
            self.messages.clear()
            self.controls = _Controls(state=self.connected_state, api_key=self._initial_key)

    def set_state(self, state: str) -> None:
        """Switch to one of :attr:`states` (the gateway's own words)."""
        if state not in self.states:
            raise ValueError(f"state must be one of {', '.join(self.states)}, got {state!r}")
        with self._lock:
            self.controls.state = state

    def connect(self) -> None:
        self.set_state(self.connected_state)

    def disconnect(self) -> None:
        self.set_state(self.disconnected_state)

    def not_on_whatsapp(self, *phones: str) -> None:
        """These numbers have no WhatsApp account."""
        with self._lock:
            self.controls.absent.update(digits(phone) for phone in phones)

    def registered_without_nine(self, *phones: str) -> None:
        """These mobiles (given with their 9) have accounts keyed without the 9:
        checks return the 9-less id and sends to the 9-form go nowhere."""
        with self._lock:
            self.controls.short.update(digits(phone) for phone in phones)

    def fail_next(self, count: int, *, status: int = DEFAULT_FAIL_STATUS) -> None:
        """The next ``count`` sends answer ``status``."""
        with self._lock:
            self.controls.fail_next, self.controls.fail_status = count, status

    def fail_every(self, k: int, *, status: int = DEFAULT_FAIL_STATUS) -> None:
        """Every ``k``-th send (k, 2k, ...) answers ``status``; 0 turns it off."""
        with self._lock:
            self.controls.fail_every, self.controls.fail_status, self.controls.sends = k, status, 0

    def slow(self, seconds: float) -> None:
        """Every API call waits ``seconds`` before answering."""
        with self._lock:
            self.controls.delay_seconds = seconds

    def require_api_key(self, key: str | None) -> None:
        """Answer 401 unless calls carry ``key`` (None: accept any)."""
        with self._lock:
            self.controls.api_key = key

    def hang_next(self, count: int, *, seconds: float = DEFAULT_HANG_SECONDS) -> None:
        """The next ``count`` sends go out (recorded, listed by the recent-messages
        endpoint) but their answer is held ``seconds``: the client times out
        not knowing the message went out (an ambiguous send)."""
        with self._lock:
            self.controls.hang_next, self.controls.hang_seconds = count, seconds

    def drop_next(self, count: int) -> None:
        """The next ``count`` sends go out (recorded), then the connection is
        closed without an answer (the client sees it reset: ambiguous)."""
        with self._lock:
            self.controls.drop_next = count

    def keep_messages(self, on: bool) -> None:
        """Whether the gateway keeps sent messages for its recent-messages
        endpoint (Evolution's message saving, WAHA NOWEB's store)."""
        with self._lock:
            self.controls.message_store = on

    # assertions
    @property
    def delivered(self) -> list[SentMessage]:
        """Messages that reached a WhatsApp account."""
        return [message for message in self.messages if message.reached]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Recorded requests whose path starts with ``path``."""
        return [request for request in self.requests if request.path.startswith(path)]

    # for subclasses
    def lookup(self, number: str) -> tuple[bool, str]:
        """(exists, the digits its account is keyed on) for a number check."""
        number = digits(number)
        if number in self.controls.absent:
            return False, number
        return True, without_nine(number) if number in self.controls.short else number

    def reaches(self, number: str) -> bool:
        """Whether a message addressed to ``number`` arrives somewhere."""
        number = digits(number)
        return number not in self.controls.absent and number not in self.controls.short

    def injected_failure(self) -> int | None:
        """The status this send must fail with, if a failure is due (counts sends)."""
        with self._lock:
            controls = self.controls
            controls.sends += 1
            if controls.fail_next > 0:
                controls.fail_next -= 1
                return controls.fail_status
            if controls.fail_every and controls.sends % controls.fail_every == 0:
                return controls.fail_status
            return None

    def record_message(self, message: SentMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def sent_to(self, chat_id: str) -> list[SentMessage]:
        """Messages accepted for ``chat_id``, newest first (what a gateway's
        message store answers)."""
        with self._lock:
            return sorted((m for m in self.messages if m.chat_id == chat_id), key=lambda m: -m.timestamp)

    def answer_after_send(self, request: Request, response: Response) -> Response:
        """The send's answer, unless a hang or a drop is due: a hang holds it
        (the message is already recorded), a drop closes the connection.

        Parameters:
          request: the send request (its socket is closed for a drop).
          response: the answer the send would give.
        """
        with self._lock:
            controls = self.controls
            hang = controls.hang_next > 0
            drop = not hang and controls.drop_next > 0
            controls.hang_next -= 1 if hang else 0
            controls.drop_next -= 1 if drop else 0
            seconds = controls.hang_seconds
        if hang:
            self._stopping.wait(seconds)
        if drop:
            connection = request.environ.get("werkzeug.socket")
            if connection is not None:
                connection.shutdown(socket.SHUT_RDWR)
        return response

    def handle(self, request: Request, body: Any) -> Response:
        """Answer one authorized API call; subclasses route here."""
        raise NotImplementedError

    def unauthorized(self) -> Response:
        raise NotImplementedError

    def api_key_of(self, request: Request) -> str | None:
        raise NotImplementedError

    def apply_control(self, changes: dict) -> None:
        """Apply ``POST /__fake__/control`` keys; subclasses add their own."""
        simple = {"state": self.set_state, "api_key": self.require_api_key, "delay_seconds": self.slow,
                  "drop_next": lambda count: self.drop_next(int(count)),
                  "message_store": lambda on: self.keep_messages(bool(on))}
        for key, setter in simple.items():
            if key in changes:
                setter(changes[key])
        if "hang_next" in changes:
            self.hang_next(int(changes["hang_next"]),
                           seconds=float(changes.get("hang_seconds", DEFAULT_HANG_SECONDS)))
        self.not_on_whatsapp(*changes.get("not_on_whatsapp", ()))
        self.registered_without_nine(*changes.get("without_nine", ()))
        status = int(changes.get("fail_status", DEFAULT_FAIL_STATUS))
        if "fail_next" in changes:
            self.fail_next(int(changes["fail_next"]), status=status)
        if "fail_every" in changes:
            self.fail_every(int(changes["fail_every"]), status=status)

    # the WSGI app
    def _wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        body = _json_body(request)
        if request.path.startswith(CONTROL_PREFIX):
            response = self._control(request, body)
        else:
            with self._lock:
                self.requests.append(
                    RecordedRequest(request.method, request.path, dict(request.args), _lowered(request.headers), body)
                )
                delay, key = self.controls.delay_seconds, self.controls.api_key
            if delay:
                self._stopping.wait(delay)
            response = self.unauthorized() if key is not None and self.api_key_of(request) != key else None
            response = response or self.handle(request, body)
        return response(environ, start_response)

    def _control(self, request: Request, body: Any) -> Response:
        action = request.path[len(CONTROL_PREFIX):]
        if action == "/reset" and request.method == "POST":
            self.reset()
        elif action == "/control" and request.method == "POST" and isinstance(body, dict):
            try:
                self.apply_control(body)
            except (TypeError, ValueError) as exc:
                return json_response({"error": str(exc)}, status=400)
        elif action == "/requests":
            return json_response([asdict(recorded) for recorded in self.requests])
        elif action == "/messages":
            return json_response([asdict(message) for message in self.messages])
        else:
            return json_response({"error": f"unknown control {request.method} {action}"}, status=404)
        return json_response({"ok": True})


def _lowered(headers: Any) -> dict:
    return {str(name).lower(): value for name, value in headers.items()}


def _json_body(request: Request) -> Any:
    raw = request.get_data()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def json_response(body: Any, *, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json; charset=utf-8")


def post_json(url: str, body: Any, *, headers: dict | None = None) -> requests.Response:
    """POST ``body`` as JSON (the exact bytes are those of ``json.dumps``).

    Parameters:
      url: the webhook endpoint.
      body: the webhook body.
      headers: extra headers (signatures, secret tokens).
    """
    return post_raw(url, json.dumps(body).encode(), headers=headers)


def post_raw(url: str, raw: bytes, *, headers: dict | None = None) -> requests.Response:
    """POST ``raw`` bytes as a JSON webhook (for bodies whose exact bytes are signed).

    Parameters:
      url: the webhook endpoint.
      raw: the body bytes.
      headers: extra headers.
    """
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return requests.post(url, data=raw, headers=all_headers, timeout=WEBHOOK_TIMEOUT_SECONDS)


@dataclass
class ReceivedWebhook:
    """One webhook a :class:`WebhookReceiver` got: path, headers (names lower-cased), raw bytes, parsed JSON."""

    path: str
    headers: dict
    raw: bytes
    json: Any


class WebhookReceiver:
    """A local endpoint that records webhooks (answers 200 to any POST).

    Parameters:
      status: the status it answers with (to test senders' retries).
    """

    def __init__(self, *, status: int = 200) -> None:
        self.status = status
        self.received: list[ReceivedWebhook] = []
        self._server = _Server(self._wsgi, host=LOCALHOST, port=ANY_PORT)

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> WebhookReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._server.stop()

    def _wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        raw = request.get_data()
        self.received.append(ReceivedWebhook(request.path, _lowered(request.headers), raw, _json_body(request)))
        return json_response({"ok": True}, status=self.status)(environ, start_response)


def serve_from_command_line(
    factory: Callable[[argparse.Namespace], FakeGateway], parser: argparse.ArgumentParser
) -> None:
    """Run a fake in the foreground until SIGINT/SIGTERM (for other processes' tests).

    Parameters:
      factory: builds the fake from the parsed arguments.
      parser: the fake's argument parser; ``--host``, ``--port`` and ``--api-key`` are added.
    """
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--port", type=int, default=ANY_PORT)
    parser.add_argument("--api-key", default=None)
    arguments = parser.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with factory(arguments) as fake:
        print(fake.url, flush=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
