"""The outbound guard: which URLs and addresses it refuses, that it connects
to exactly the address it checked (a name that resolves public at the check
and to 127.0.0.1 at the connect is refused), TLS on the URL's host name, no
redirects, no proxies. Real HTTP(S) servers on 127.0.0.1; the only stand-in
is the guard's resolver, for names that must resolve differently."""
from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from billing.adapters import outbound
from billing.config import Settings
from tests.conftest import TEST_GATEWAY_NETWORKS

#: An address ``is_global`` calls public (nothing connects to it in these tests).
PUBLIC = "93.184.216.34"
LOOPBACK_ONLY = outbound.Policy(networks=outbound.parse_networks(["127.0.0.0/8"]))


class Server:
    """A local HTTP(S) server answering ``status`` (with ``headers``) and recording each request's Host."""

    def __init__(self, *, status: int = 200, headers: dict | None = None, ssl_context=None) -> None:
        self.hosts: list[str] = []
        self.status, self.headers = status, headers or {}
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, ssl_context=ssl_context)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _wsgi(self, environ, start_response):
        self.hosts.append(Request(environ).host)
        return Response("ok", status=self.status, headers=self.headers)(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def server():
    made: list[Server] = []

    def make(**kwargs) -> Server:
        made.append(Server(**kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


class Resolver:
    """Stands in for the guard's DNS lookup: answers each call with the next list of addresses."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.mark.parametrize("address", [
    "169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "0.0.0.0", "100.64.0.1",
    "100.100.100.200", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fec0::1", "2002::1",
    "2002:7f00:1::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::7f00:1", "64:ff9b::a00:1", "ff02::1",
])
def test_non_public_addresses_are_refused(address):
    assert not outbound.PUBLIC_ONLY.allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert outbound.PUBLIC_ONLY.allows(ipaddress.ip_address(address))


def test_the_operators_networks_are_allowed_and_nothing_else():
    policy = outbound.Policy(networks=outbound.parse_networks(["10.0.0.0/8", "fd00::/8", "100.64.0.0/10"]))
    assert policy.allows(ipaddress.ip_address("10.1.2.3")) and policy.allows(ipaddress.ip_address("::ffff:10.1.2.3"))
    assert policy.allows(ipaddress.ip_address("fd12::1")) and policy.allows(ipaddress.ip_address("100.100.100.200"))
    assert not policy.allows(ipaddress.ip_address("127.0.0.1"))
    assert not policy.allows(ipaddress.ip_address("169.254.169.254"))
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a network"):
        outbound.parse_networks(["10.0.0.0/33"])


@pytest.mark.parametrize(("url", "reason"), [
    ("not a url", outbound.NOT_A_URL),
    ("", outbound.NOT_A_URL),
    (None, outbound.NOT_A_URL),
    ("http://gate way/", outbound.NOT_A_URL),
    ("http://[::1", outbound.NOT_A_URL),
    ("file:///etc/passwd", outbound.BAD_SCHEME),
    ("gopher://127.0.0.1:70/_stats", outbound.BAD_SCHEME),
    ("ftp://example.com/", outbound.BAD_SCHEME),
    ("example.com:8080", outbound.BAD_SCHEME),
    ("http:///path", outbound.NO_HOST),
    ("http://user:pass@example.com/", outbound.USERINFO),
    ("http://example.com@127.0.0.1/", outbound.USERINFO),
    ("http://example.com:0/", outbound.BAD_PORT),
    ("http://example.com:99999/", outbound.NOT_A_URL),
])
def test_urls_of_the_wrong_form_are_refused_before_any_lookup(monkeypatch, url, reason):
    resolver = Resolver([PUBLIC])
    monkeypatch.setattr(outbound, "resolve", resolver)
    with pytest.raises(outbound.DestinationRefused) as refused:
        outbound.check_url(url, policy=outbound.ANY_ADDRESS)
    assert refused.value.reason == reason and resolver.calls == []
    with pytest.raises(outbound.DestinationRefused):
        outbound.request("GET", url, policy=outbound.ANY_ADDRESS, timeout=1)
    assert resolver.calls == []


def test_a_name_with_one_private_address_is_refused_without_naming_it(monkeypatch):
    monkeypatch.setattr(outbound, "resolve", Resolver([PUBLIC, "10.9.8.7"]))
    with pytest.raises(outbound.DestinationRefused) as refused:
        outbound.check_url("https://gateway.example/", policy=outbound.PUBLIC_ONLY)
    assert refused.value.reason == outbound.NOT_ALLOWED and "10.9.8.7" not in str(refused.value)


def test_a_host_that_does_not_resolve_is_refused_unless_told_otherwise():
    with pytest.raises(outbound.DestinationRefused) as refused:
        outbound.check_url("http://no-such-host.invalid/", policy=outbound.PUBLIC_ONLY)
    assert refused.value.reason == outbound.UNRESOLVED
    found = outbound.check_url("http://no-such-host.invalid:8080/", policy=outbound.PUBLIC_ONLY, require_resolvable=False)
    assert found == outbound.Destination(scheme="http", host="no-such-host.invalid", port=8080)


def test_a_name_public_at_the_check_and_loopback_at_the_connect_is_refused(monkeypatch, server):
    local = server()
    resolver = Resolver([PUBLIC], ["127.0.0.1"])
    monkeypatch.setattr(outbound, "resolve", resolver)
    url = f"http://rebinding.example:{local.port}/"
    outbound.check_url(url, policy=outbound.PUBLIC_ONLY)  # public when checked
    with pytest.raises(outbound.DestinationRefused) as refused:
        outbound.request("GET", url, policy=outbound.PUBLIC_ONLY, timeout=5)
    assert refused.value.reason == outbound.NOT_ALLOWED
    assert resolver.calls == ["rebinding.example", "rebinding.example"] and local.hosts == []


def test_the_connection_goes_to_the_address_the_guard_resolved(monkeypatch, server):
    local = server()
    resolver = Resolver(["127.0.0.1"])
    monkeypatch.setattr(outbound, "resolve", resolver)
    # No DNS knows this name: the answer can only have come from the address the guard checked.
    response = outbound.request("GET", f"http://gateway.internal:{local.port}/x", policy=LOOPBACK_ONLY, timeout=5)
    assert response.status_code == 200 and response.text == "ok"
    assert resolver.calls == ["gateway.internal"] and local.hosts == [f"gateway.internal:{local.port}"]


def test_connecting_refuses_a_loopback_literal_outside_the_policy(server):
    local = server()
    with pytest.raises(outbound.DestinationRefused):
        outbound.request("GET", f"http://127.0.0.1:{local.port}/", policy=outbound.PUBLIC_ONLY, timeout=5)
    with pytest.raises(outbound.DestinationRefused):
        outbound.request("GET", f"http://[::ffff:127.0.0.1]:{local.port}/", policy=outbound.PUBLIC_ONLY, timeout=5)
    assert local.hosts == []


def test_a_host_that_does_not_resolve_is_a_connection_error():
    with pytest.raises(requests.ConnectionError):
        outbound.request("GET", "http://no-such-host.invalid/", policy=outbound.ANY_ADDRESS, timeout=5)


def test_a_name_no_resolver_can_encode_or_with_no_address_does_not_resolve(monkeypatch):
    with pytest.raises(outbound.DestinationRefused) as refused:
        outbound.check_url(f"http://{'a' * 64}.example/", policy=outbound.ANY_ADDRESS)
    assert refused.value.reason == outbound.UNRESOLVED
    monkeypatch.setattr(outbound, "resolve", Resolver([]))
    with pytest.raises(outbound.DestinationRefused) as refused:
        outbound.check_url("http://empty.example/", policy=outbound.ANY_ADDRESS)
    assert refused.value.reason == outbound.UNRESOLVED


def test_a_host_whose_first_address_refuses_is_reached_at_the_next(monkeypatch, server):
    local = server()  # listens on 127.0.0.1 only: 127.0.0.2 refuses the same port
    monkeypatch.setattr(outbound, "resolve", Resolver(["127.0.0.2", "127.0.0.1"]))
    assert outbound.request("GET", f"http://two.example:{local.port}/", policy=LOOPBACK_ONLY, timeout=5).text == "ok"
    monkeypatch.setattr(outbound, "resolve", Resolver(["127.0.0.2"]))
    with pytest.raises(requests.ConnectionError, match="Failed to establish a new connection"):
        outbound.request("GET", f"http://two.example:{local.port}/", policy=LOOPBACK_ONLY, timeout=5)


def test_a_connect_that_times_out_is_a_connect_timeout(monkeypatch):
    def no_answer(address, timeout, **kwargs):  # a filtered port: the SYN goes unanswered
        raise TimeoutError("timed out")

    monkeypatch.setattr(outbound.connection, "create_connection", no_answer)
    with pytest.raises(requests.ConnectTimeout):
        outbound.request("GET", "http://127.0.0.1:9/", policy=LOOPBACK_ONLY, timeout=1)


def test_redirects_are_answers_not_followed(server):
    target = server()
    redirecting = server(status=302, headers={"Location": f"http://127.0.0.1:{target.port}/inside"})
    response = outbound.request("GET", f"http://127.0.0.1:{redirecting.port}/", policy=LOOPBACK_ONLY, timeout=5,
                                allow_redirects=True)
    assert response.status_code == 302 and len(redirecting.hosts) == 1 and target.hosts == []


def test_proxies_from_the_environment_are_not_used(monkeypatch, server):
    local = server()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert outbound.request("GET", f"http://127.0.0.1:{local.port}/", policy=LOOPBACK_ONLY, timeout=5).status_code == 200
    with pytest.raises(outbound.DestinationRefused, match="proxy"):
        outbound.request("GET", f"http://127.0.0.1:{local.port}/", policy=LOOPBACK_ONLY, timeout=5,
                         proxies={"http": "http://127.0.0.1:9"})


def _certificate(tmp_path, name: str) -> tuple[str, str]:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.mark.parametrize(("certified", "accepted"), [("gateway.test", True), ("other.test", False)])
def test_tls_verifies_the_urls_host_name_not_the_address(monkeypatch, server, tmp_path, certified, accepted):
    cert, key = _certificate(tmp_path, certified)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    local = server(ssl_context=context)
    monkeypatch.setattr(outbound, "resolve", Resolver(["127.0.0.1"]))
    url = f"https://gateway.test:{local.port}/"
    if accepted:
        assert outbound.request("GET", url, policy=LOOPBACK_ONLY, timeout=5, verify=cert).text == "ok"
        assert local.hosts == [f"gateway.test:{local.port}"]
    else:
        with pytest.raises(requests.exceptions.SSLError):
            outbound.request("GET", url, policy=LOOPBACK_ONLY, timeout=5, verify=cert)


def test_gateways_without_the_setting_are_public_only(monkeypatch):
    unset = Settings.from_env({})
    assert unset.gateway_private_networks == ()
    monkeypatch.setattr(outbound, "_gateway_policy", None)
    monkeypatch.delenv("GATEWAY_PRIVATE_NETWORKS")
    assert not outbound.gateway_policy().allows(ipaddress.ip_address("127.0.0.1"))
    monkeypatch.setattr(outbound, "_gateway_policy", None)
    monkeypatch.setenv("GATEWAY_PRIVATE_NETWORKS", TEST_GATEWAY_NETWORKS)
    assert outbound.gateway_policy().allows(ipaddress.ip_address("127.0.0.1"))
    assert outbound.gateway_policy().allows(ipaddress.ip_address("::1"))


def test_the_setting_is_read_and_checked():
    assert Settings.from_env({"GATEWAY_PRIVATE_NETWORKS": " 10.0.0.0/8, fd00::/8 ,172.20.0.5"}).gateway_private_networks == (
        "10.0.0.0/8", "fd00::/8", "172.20.0.5/32")
    with pytest.raises(ValueError, match="GATEWAY_PRIVATE_NETWORKS: 'intranet' is not a network"):
        Settings.from_env({"GATEWAY_PRIVATE_NETWORKS": "10.0.0.0/8,intranet"})


def test_wiring_hands_the_setting_to_the_guard(monkeypatch):
    monkeypatch.setattr(outbound, "_gateway_policy", None)
    outbound.configure(gateway_private_networks=["192.168.7.0/24"])
    assert outbound.gateway_policy().allows(ipaddress.ip_address("192.168.7.20"))
    assert not outbound.gateway_policy().allows(ipaddress.ip_address("127.0.0.1"))
    outbound.configure(gateway_private_networks=Settings(database_url="").gateway_private_networks)
    assert outbound.gateway_policy().allows(ipaddress.ip_address("127.0.0.1"))  # unset: the environment's
    assert outbound.callback_policy(allow_private=False) is outbound.PUBLIC_ONLY
    assert outbound.callback_policy(allow_private=True).allows(ipaddress.ip_address("127.0.0.1"))
