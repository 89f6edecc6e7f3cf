"""The one guard and resolver of every outbound HTTP request (gateways, callbacks).

A tenant chooses where we connect (an instance's ``url``, a campaign's
``callback_url``), so a request could be made to reach inside our own network:
a cloud metadata service, a database's HTTP port, another tenant's gateway.
Every outbound request therefore goes through :func:`request`, which

* takes http:// and https:// URLs only, with a host and without a user name or
  password in them;
* resolves the host **when it connects**, checks every address it got, and
  connects to exactly the address it checked: there is no second DNS lookup
  that a name could answer differently (a name that resolves to a public
  address at the check and to 127.0.0.1 at the connect is refused);
* keeps TLS on the original host name (SNI and certificate verification);
* never follows a redirect, never uses a proxy from the environment.

"Allowed" means public (:func:`is_public`: ``ipaddress``' ``is_global``, and
neither multicast, reserved, nor 6to4), or inside a network the
:class:`Policy` lists. Gateways legitimately run on private networks next to
us: the operator lists those in GATEWAY_PRIVATE_NETWORKS
(:func:`gateway_policy`). Callbacks are public only, unless the operator
allowed a tenant private callbacks (:func:`callback_policy`).

A refused destination raises :class:`DestinationRefused`, whose reason never
names the address the host resolved to (that would make us a DNS oracle for
names inside our network); the address goes to our log.
"""
from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union
from urllib.parse import urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

log = structlog.get_logger(__name__)

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The only URL schemes we connect to (file://, gopher://, ftp://... are refused).
ALLOWED_SCHEMES = ("http", "https")
#: The port of each scheme when the URL gives none.
DEFAULT_PORTS = {"http": 80, "https": 443}

#: Networks refused even though Python 3.11's ``is_global`` calls them global:
#: 6to4 (2002::/16) embeds any IPv4 address, private ones included.
REFUSED_NETWORKS = (ipaddress.ip_network("2002::/16"),)

#: Every address (a policy that allows anything: a tenant the operator allowed
#: private callbacks).
EVERY_NETWORK = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

#: Reasons of a refusal, as the tenant reads them (never with an address).
NOT_A_URL = "is not a valid URL"
BAD_SCHEME = "must be an http:// or https:// URL"
NO_HOST = "has no host"
USERINFO = "must not carry a user name or password"
BAD_PORT = "has a port that is not valid"
UNRESOLVED = "names a host that does not resolve"
NOT_ALLOWED = "resolves to a non-public address, which is not allowed"


class DestinationRefused(Exception):
    """A URL we will not connect to.

    Parameters:
      reason: why, short and without the resolved address
        (``resolves to a non-public address, which is not allowed``).
      addresses: the refused addresses, for our log only.
    """

    def __init__(self, reason: str, *, addresses: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.addresses = addresses


@dataclass(frozen=True)
class Policy:
    """Which non-public networks a destination may lie in (public addresses
    are always allowed).

    Parameters:
      networks: the allowed non-public networks (none: public addresses only).
    """

    networks: tuple[Network, ...] = ()

    def allows(self, address: Address) -> bool:
        """Whether we may connect to ``address``.

        Parameters:
          address: a resolved address (IPv4-mapped IPv6 is judged as its IPv4).
        """
        address = unwrapped(address)
        return is_public(address) or any(address in network for network in self.networks)


#: Public addresses only.
PUBLIC_ONLY = Policy()
#: Any address (still http/https only, still no redirects).
ANY_ADDRESS = Policy(networks=EVERY_NETWORK)


def unwrapped(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: Address) -> bool:
    """Whether ``address`` is a public unicast address: ``is_global`` (which
    refuses private, loopback, link-local, 100.64.0.0/10 CGNAT and more), and
    not multicast, reserved (IPv4-compatible and NAT64 forms), site-local or 6to4.

    Parameters:
      address: the address, IPv4-mapped IPv6 already unwrapped.
    """
    if not address.is_global or address.is_multicast or address.is_reserved:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False
    return not any(address in network for network in REFUSED_NETWORKS)


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (``10.0.0.0/8``, ``fd00::/8``, a bare address) as networks.

    Parameters:
      texts: the CIDRs as written.

    Raises:
      ValueError: one is not a network, naming it.
    """
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not a network (write a CIDR such as 10.0.0.0/8)") from None
    return tuple(networks)


# --- the policies in force -----------------------------------------------------

_lock = threading.Lock()
_gateway_policy: Policy | None = None


def configure(*, gateway_private_networks: Iterable[str] | None) -> None:
    """Set the networks gateways may be in (wiring calls this from Settings).

    Parameters:
      gateway_private_networks: CIDRs of GATEWAY_PRIVATE_NETWORKS; None:
        read from the environment when first needed.
    """
    global _gateway_policy
    policy = None if gateway_private_networks is None else Policy(networks=parse_networks(gateway_private_networks))
    with _lock:
        _gateway_policy = policy


def gateway_policy() -> Policy:
    """Where gateways may be: public addresses and the operator's
    GATEWAY_PRIVATE_NETWORKS (read from the environment once when nothing
    wired this process)."""
    global _gateway_policy
    with _lock:
        if _gateway_policy is None:
            from billing.config import Settings

            _gateway_policy = Policy(networks=parse_networks(Settings.from_env().gateway_private_networks))
        return _gateway_policy


def callback_policy(*, allow_private: bool) -> Policy:
    """Where a tenant's callbacks may go: public addresses only, anywhere when
    the operator allowed the tenant private callbacks.

    Parameters:
      allow_private: the tenant's ``allow_private_callbacks``.
    """
    return ANY_ADDRESS if allow_private else PUBLIC_ONLY


# --- checking ----------------------------------------------------------------------

@dataclass(frozen=True)
class Destination:
    """Where a URL points.

    Parameters:
      scheme: ``http`` or ``https``.
      host: the host name or address (IPv6 without brackets).
      port: the port (the scheme's default when the URL gives none).
    """

    scheme: str
    host: str
    port: int


def destination(url: Any) -> Destination:
    """Where ``url`` points, checking its form only (no DNS).

    Parameters:
      url: the URL.

    Raises:
      DestinationRefused: not a string URL, a scheme other than http/https,
        no host, a user name or password, a port out of range.
    """
    if not isinstance(url, str) or not url or any(char.isspace() or not char.isprintable() for char in url):
        raise DestinationRefused(NOT_A_URL)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationRefused(NOT_A_URL) from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DestinationRefused(BAD_SCHEME)
    if "@" in parts.netloc:
        raise DestinationRefused(USERINFO)
    if not parts.hostname:
        raise DestinationRefused(NO_HOST)
    if port == 0:
        raise DestinationRefused(BAD_PORT)
    return Destination(scheme=scheme, host=parts.hostname, port=port or DEFAULT_PORTS[scheme])


def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host``, in the resolver's order (an address is itself).
    The only DNS lookup of outbound requests (tests replace it).

    Parameters:
      host: a name or an address (IPv6 with or without brackets).
      port: the port to connect to.

    Raises:
      socket.gaierror: the host does not resolve.
    """
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def vetted_addresses(host: str, port: int, *, policy: Policy) -> list[Address]:
    """Resolve ``host`` once and check every address it has.

    Parameters:
      host: the host to connect to.
      port: its port.
      policy: which non-public networks are allowed.

    Returns:
      The addresses, in the resolver's order, all allowed.

    Raises:
      socket.gaierror: the host does not resolve.
      DestinationRefused: one of its addresses is not allowed (every one
        must be: a name with one private address among public ones would
        reach inside whenever the resolver puts it first).
    """
    try:
        addresses = [ipaddress.ip_address(text.split("%", 1)[0]) for text in resolve(host, port)]
    except UnicodeError:  # a name IDNA cannot encode
        raise DestinationRefused(UNRESOLVED) from None
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    refused = tuple(str(address) for address in addresses if not policy.allows(address))
    if refused:
        raise DestinationRefused(NOT_ALLOWED, addresses=refused)  # the reason never names them
    return addresses


def check_url(url: Any, *, policy: Policy, require_resolvable: bool = True) -> Destination:
    """Check a URL before storing it: its form, and the addresses its host
    resolves to now (every request checks again when it connects).

    Parameters:
      url: the URL.
      policy: which non-public networks are allowed.
      require_resolvable: False lets a host that does not resolve now pass
        (a callback receiver not published yet; its deliveries are retried).

    Raises:
      DestinationRefused: with the reason.
    """
    target = destination(url)
    try:
        vetted_addresses(target.host, target.port, policy=policy)
    except socket.gaierror:
        if require_resolvable:
            raise DestinationRefused(UNRESOLVED) from None
    return target


# --- connecting ------------------------------------------------------------------

class _GuardedConnectionMixin:
    """``_new_conn`` of urllib3's connections, resolving through the guard and
    connecting to the checked address itself. ``host`` stays the URL's host,
    so the Host header, SNI and certificate verification use it."""

    #: Set on the subclasses :func:`_pool_classes` builds per policy.
    policy: Policy = PUBLIC_ONLY

    def _new_conn(self) -> socket.socket:
        try:
            addresses = vetted_addresses(self._dns_host, self.port, policy=self.policy)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except DestinationRefused as exc:
            # The addresses are for us: the caller's reason never names them.
            log.warning("outbound connection refused", host=self.host, port=self.port, addresses=list(exc.addresses))
            raise
        failure: OSError | None = None
        for address in addresses:
            try:
                sock = connection.create_connection(
                    (str(address), self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:  # try the host's next address, as urllib3 does
                failure = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        if isinstance(failure, socket.timeout):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
        raise NewConnectionError(self, f"Failed to establish a new connection: {failure}")


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    """An http:// connection through the guard."""


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    """An https:// connection through the guard (TLS on the URL's host name)."""


@lru_cache(maxsize=64)
def _pool_classes(policy: Policy) -> dict[str, type]:
    """Connection pools whose connections check against ``policy``."""
    http_connection = type("PolicyHTTPConnection", (GuardedHTTPConnection,), {"policy": policy})
    https_connection = type("PolicyHTTPSConnection", (GuardedHTTPSConnection,), {"policy": policy})
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_connection}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_connection}),
    }


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through the guard.

    Parameters:
      policy: which non-public networks are allowed.
    """

    def __init__(self, *, policy: Policy) -> None:
        self.policy = policy  # before HTTPAdapter.__init__, which builds the pool manager
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # A proxy would connect for us, past the guard.
        raise DestinationRefused("must not go through a proxy")


class GuardedSession(requests.Session):
    """A requests session that only makes guarded, redirect-free requests.

    Parameters:
      policy: which non-public networks are allowed.
    """

    def __init__(self, *, policy: Policy) -> None:
        super().__init__()
        self.trust_env = False  # no proxies, no .netrc credentials from the environment
        self.adapters.clear()
        for scheme in ALLOWED_SCHEMES:
            self.mount(f"{scheme}://", GuardedAdapter(policy=policy))

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        destination(url)  # a refused form raises before anything is prepared
        kwargs["allow_redirects"] = False
        return super().request(method, url, **kwargs)


def request(method: str, url: str, *, policy: Policy, **kwargs) -> requests.Response:
    """Make one guarded request (as :func:`requests.request` does, through a
    :class:`GuardedSession` closed afterwards). Redirects are answers, not followed.

    Parameters:
      method: the HTTP method.
      url: the URL.
      policy: which non-public networks are allowed.
      kwargs: what :meth:`requests.Session.request` takes (json, headers, timeout...).

    Raises:
      DestinationRefused: the URL, or an address its host resolved to when
        connecting, is not allowed (nothing was sent).
      requests.RequestException: as requests raises them.
    """
    with GuardedSession(policy=policy) as session:
        return session.request(method, url, **kwargs)
