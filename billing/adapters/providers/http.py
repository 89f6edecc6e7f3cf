"""HTTP plumbing and JSON helpers shared by the real gateway adapters.

:class:`GatewayClient` makes one call and hands back a :class:`Reply`; network
failures (timeouts, refused connections) become :class:`GatewayError` here,
so adapters only classify the HTTP answers their gateway gives. Every call
goes through the outbound guard (:mod:`billing.adapters.outbound`): a gateway
URL whose host is, or now resolves to, an address the operator did not allow
is never connected to, and redirects are not followed. A network
failure says whether the request may have reached the gateway
(``GatewayError.ambiguous``): a refused connection, a DNS failure or a connect
timeout never did; a read timeout or a connection dropped after the request
was written may have, so the message may have gone out. The helpers
below read untrusted JSON (gateway answers, webhook bodies) without ever
raising ``KeyError`` / ``TypeError``.

A gateway's error answer never reaches the tenant verbatim: a reason is our
classification, the status code and the gateway's own message field where
its JSON shape is known (:func:`gateway_message`), cut short. The raw body goes
to our log only (``gateway_body``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import structlog
from pydantic import Field
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from billing.adapters import outbound
from billing.adapters.providers.base import GatewayError
from billing.adapters.providers.registry import GatewayOptions

log = structlog.get_logger(__name__)

#: Instance options every HTTP gateway adapter reads.
OPTION_TYPING = "typing"
OPTION_TYPING_MS = "typing_ms"
OPTION_TIMEOUT = "timeout_seconds"

#: Seconds a call may wait for an answer when the instance sets no ``timeout_seconds``.
DEFAULT_TIMEOUT_SECONDS = 15.0
#: Bounds of ``timeout_seconds``: below a tenth of a second nothing answers;
#: above two minutes a hung gateway would hold a send worker that long.
MIN_TIMEOUT_SECONDS = 0.1
MAX_TIMEOUT_SECONDS = 120.0
#: "typing..." shown before each message (ms) when the instance sets no ``typing_ms``.
DEFAULT_TYPING_MS = 1200
#: Upper bound of ``typing_ms``: a person types a reminder in seconds, and the
#: send waits this long (Evolution holds its answer for it).
MAX_TYPING_MS = 15_000
#: Upper bound on establishing the TCP connection (a gateway that does not even
#: accept connections should be reported quickly, whatever the read timeout).
CONNECT_TIMEOUT_SECONDS = 5.0
#: Milliseconds per second, for options given in ms.
MS_PER_SECOND = 1000
#: Epoch timestamps above this are in milliseconds, not seconds.
MAX_EPOCH_SECONDS = 100_000_000_000
#: How far the gateway's clock may lag ours when matching a message it
#: recorded against the moment we sent it (find_sent).
CLOCK_SKEW_SECONDS = 30.0

#: HTTP statuses the adapters treat specially.
HTTP_OK_MIN = 200
HTTP_OK_MAX = 299
HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_NOT_FOUND = 404
HTTP_UNPROCESSABLE = 422
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500

#: Longest error text quoted in a reason (reasons are stored per contact and
#: as Instance.health_reason, a 300-character column).
MAX_REASON_LENGTH = 300
#: Longest part of a gateway's own message field quoted in a reason: enough
#: for "Connection Closed" or a validation message, too little for a dump.
MAX_GATEWAY_MESSAGE_LENGTH = 120
#: Longest part of an error answer's raw body written to our log (``gateway_body``).
MAX_LOGGED_BODY_LENGTH = 2000
#: Joins the pieces of a multi-part gateway error message.
MESSAGE_SEPARATOR = "; "

#: JID domains whose user part is a phone number (Evolution / WAHA spellings).
PHONE_JID_DOMAINS = ("s.whatsapp.net", "c.us")
#: JID domains of chats that are not one person (never customer replies).
NON_PERSONAL_JID_DOMAINS = ("g.us", "broadcast", "newsletter")


@dataclass(frozen=True)
class Reply:
    """A gateway's HTTP answer.

    Parameters:
      status: the HTTP status code.
      body: the parsed JSON body, or None when it was empty or not JSON.
      text: the raw body text (logged, never quoted in reasons).
    """

    status: int
    body: Any
    text: str

    @property
    def ok(self) -> bool:
        return HTTP_OK_MIN <= self.status <= HTTP_OK_MAX


class GatewayClient:
    """Calls one gateway's HTTP API.

    Parameters:
      provider: the provider name, the first word of every reason.
      base_url: the gateway's base URL (a trailing slash is ignored).
      headers: sent with every call (the API key).
      timeout_seconds: how long to wait for an answer.
    """

    def __init__(self, *, provider: str, base_url: str, headers: Mapping[str, str], timeout_seconds: float) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.timeout_seconds = timeout_seconds

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        extra_seconds: float = 0.0,
    ) -> Reply:
        """Make one call; raise :class:`GatewayError` when no answer came.

        Parameters:
          method: the HTTP method.
          path: appended to the base URL (starts with ``/``).
          json_body: sent as JSON when not None.
          params: the query string.
          extra_seconds: added to the read timeout, for calls the gateway
            deliberately holds open (Evolution's typing ``delay``).
        """
        read_timeout = self.timeout_seconds + extra_seconds
        timeout = (min(CONNECT_TIMEOUT_SECONDS, read_timeout), read_timeout)
        try:
            response = outbound.request(
                method, f"{self.base_url}{path}", policy=outbound.gateway_policy(), json=json_body, params=params,
                headers=self.headers, timeout=timeout,
            )
        # Refused by the guard (nothing was sent): the instance's URL, not the contact.
        except outbound.DestinationRefused as exc:
            raise GatewayError(
                f"{self.provider} URL {self.base_url!r} refused: {exc.reason}", transient=True, instance_down=True
            ) from exc
        # A malformed base URL is the instance's configuration: pause, do not fail contacts.
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise GatewayError(
                f"{self.provider} URL is not valid: {self.base_url!r}", transient=True, instance_down=True
            ) from exc
        # ConnectTimeout is also a Timeout: it means nothing listens, so it is
        # reported with the refused connections, before the read timeouts.
        except requests.ConnectTimeout as exc:
            raise self._unreachable(exc) from exc
        except requests.ConnectionError as exc:
            if never_reached(exc):
                raise self._unreachable(exc) from exc
            # The connection broke after the request was written: the gateway
            # may have acted on it (the message may be out).
            raise GatewayError(
                f"{self.provider} dropped the connection during {method} {path} ({type(exc).__name__})",
                transient=True,
                ambiguous=True,
            ) from exc
        except requests.Timeout as exc:
            # A read timeout: the request went out, the answer did not come.
            raise GatewayError(
                f"{self.provider} did not answer {method} {path} within {read_timeout:g} s",
                transient=True,
                ambiguous=True,
            ) from exc
        except requests.RequestException as exc:
            raise GatewayError(f"{self.provider} call failed: {type(exc).__name__}", transient=True) from exc
        reply = Reply(status=response.status_code, body=_json_or_none(response.text), text=response.text)
        if not reply.ok:
            # The raw answer is for us: reasons quote only its known message field.
            log.info("gateway error answer", provider=self.provider, method=method, path=path, status=reply.status,
                     gateway_body=reply.text[:MAX_LOGGED_BODY_LENGTH])
        return reply

    def _unreachable(self, exc: Exception) -> GatewayError:
        """Nothing answered at the base URL: the whole instance is down, and
        the request never reached the gateway (safe to send again)."""
        return GatewayError(
            f"{self.provider} unreachable at {self.base_url} ({type(exc).__name__})",
            transient=True,
            instance_down=True,
        )


def never_reached(exc: requests.ConnectionError) -> bool:
    """Whether a connection error happened before any byte of the request was
    sent: refused, DNS failure (urllib3's NameResolutionError is a
    NewConnectionError), connect timeout, or a TLS/proxy failure while
    connecting. Anything else (``Connection aborted``, reset, remote end
    closed without answering) may have happened after the request was written.

    Parameters:
      exc: what requests raised.
    """
    if isinstance(exc, (requests.exceptions.SSLError, requests.exceptions.ProxyError)):
        return True
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _json_or_none(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def status_error(*, provider: str, reply: Reply, message: str) -> GatewayError:
    """The error for an answer no gateway-specific rule matched.

    Parameters:
      provider: the provider name (first word of the reason).
      reply: the answer.
      message: the gateway's error text, already flattened.
    """
    reason = f"{provider} {reply.status}: {message or 'no error message'}"
    if reply.status == HTTP_UNAUTHORIZED:
        # A wrong or rotated token fails every call alike: the instance's
        # configuration, not the contact (it waits until the token is fixed).
        return GatewayError(
            f"{provider} {reply.status}: gateway rejected the API key "
            "(wrong or rotated token: update the instance's token)",
            transient=True,
            instance_down=True,
        )
    if reply.status == HTTP_TOO_MANY_REQUESTS or reply.status >= HTTP_SERVER_ERROR:
        return GatewayError(reason, transient=True)
    return GatewayError(reason, transient=False)


def dig(value: Any, *keys: str | int) -> Any:
    """``value[k1][k2]...``, or None as soon as a step does not exist.

    Parameters:
      value: parsed JSON.
      keys: mapping keys (str) and list indexes (int), outermost first.
    """
    for key in keys:
        if isinstance(key, str) and isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(key, int) and isinstance(value, list) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def text_of(value: Any) -> str:
    """``value`` if it is a string, else "" (JSON fields of the wrong type)."""
    return value if isinstance(value, str) else ""


def flatten_message(value: Any) -> str:
    """One line from a gateway's error message: a string, a list (Evolution
    nests validation errors as ``[["a", "b"]]``) or an object with ``message``."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list):
        parts = (flatten_message(item) for item in value)
        return MESSAGE_SEPARATOR.join(part for part in parts if part)
    if isinstance(value, Mapping):
        return flatten_message(value.get("message"))
    return ""


def gateway_message(reply: Reply, paths: tuple[tuple[str | int, ...], ...]) -> str:
    """A gateway's own error text, whole and on one line: the first non-empty
    value at one of ``paths`` in its JSON answer; "" when none is there (an
    answer of another shape, or not JSON, is never quoted). A reason quotes it
    cut to :data:`MAX_GATEWAY_MESSAGE_LENGTH` (:func:`shorten`).

    Parameters:
      reply: the gateway's answer.
      paths: where that gateway puts its error text (see :func:`dig`), in order.
    """
    for path in paths:
        message = flatten_message(dig(reply.body, *path))
        if message:
            return message
    return ""


def shorten(text: str, *, limit: int = MAX_REASON_LENGTH) -> str:
    """``text`` cut to ``limit`` characters (default :data:`MAX_REASON_LENGTH`).

    Parameters:
      text: the text.
      limit: the longest result.
    """
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def digits_of(text: str) -> str:
    """Only the digits of ``text`` (``+55 11 ...`` -> ``5511...``)."""
    return "".join(char for char in text if char.isdigit())


def jid_parts(jid: str) -> tuple[str, str]:
    """(user, domain) of a JID, without the device suffix (``user:12@domain``)."""
    user, _, domain = jid.partition("@")
    return user.partition(":")[0], domain


def is_personal_chat(jid: str) -> bool:
    """False for groups, broadcasts (status) and channels."""
    return bool(jid) and jid_parts(jid)[1] not in NON_PERSONAL_JID_DOMAINS


def phone_from_jid(jid: str) -> str:
    """E.164 ``+<digits>`` from a phone JID (or bare digits), else "" (``@lid``
    ids are not phone numbers)."""
    user, domain = jid_parts(jid)
    if domain and domain not in PHONE_JID_DOMAINS:
        return ""
    return f"+{user}" if user.isdigit() else ""


class HttpGatewayOptions(GatewayOptions):
    """The options every HTTP gateway takes (providers add their own). An
    option left out takes its default (fields may be absent, never null)."""

    typing: bool = Field(
        None, description='Show "typing..." before each message (default true; false sends at once).'
    )
    typing_ms: int = Field(
        None, ge=0, le=MAX_TYPING_MS,
        description=f"How long \"typing...\" shows before each message, in ms (default {DEFAULT_TYPING_MS}).",
    )
    timeout_seconds: float = Field(
        None, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS,
        description=f"How long a call to the gateway may wait for its answer (default {DEFAULT_TIMEOUT_SECONDS:g} s).",
    )


def options_of(instance: Any) -> Mapping[str, Any]:
    """The instance's options (a missing or non-dict value reads as empty)."""
    options = getattr(instance, "options", None)
    return options if isinstance(options, Mapping) else {}


def number_option(options: Mapping[str, Any], name: str, *, default: float) -> float:
    """A non-negative number option; ``default`` when unset or invalid.

    Parameters:
      options: the instance's options.
      name: the option.
      default: used when the option is missing, not a number, or negative.
    """
    value = options.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    return number if number >= 0 else default


def bool_option(options: Mapping[str, Any], name: str, *, default: bool) -> bool:
    """A boolean option (JSON true/false, or "true"/"false" typed in a form)."""
    value = options.get(name)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return default


def epoch_seconds(value: Any) -> float | None:
    """A JSON timestamp in seconds since the epoch (number or digit string;
    milliseconds are recognized by their size), or None when unreadable.

    Parameters:
      value: the field as the gateway gave it.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, (int, float)):
        return None
    # Seconds stay below 1e11 until the year 5138; larger values are milliseconds.
    try:
        return value / MS_PER_SECOND if value > MAX_EPOCH_SECONDS else float(value)
    except OverflowError:  # an integer beyond any float (10**400) is no time
        return None


def naive_utc_epoch(moment: datetime) -> float:
    """Seconds since the epoch of a naive UTC datetime (how billing stores times).

    Parameters:
      moment: naive, in UTC.
    """
    return moment.replace(tzinfo=UTC).timestamp()
