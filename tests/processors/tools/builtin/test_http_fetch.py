"""http.fetch against a real HTTP server on loopback.

The SSRF guard refuses loopback, so the tests that fetch allow-list 127.0.0.1 (or the name
``localhost``) explicitly; the guard tests use no allow-list and prove that nothing was
requested. Addresses outside loopback (10.x, 169.254.169.254…) are refused before any
connection is tried, so no traffic leaves this machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from processors.tools.builtin import FetchFailed, FetchRefused, HttpFetch, ToolTimeout
from processors.tools.builtin._http_fetch import MAX_REDIRECTS, SsrfGuard, refusal
from tests.processors.tools.builtin.local_http import LocalServer
from wrenchai.embedded import free_port
from wrenchai.settings import Settings


async def _text(request: web.Request) -> web.StreamResponse:
    return web.Response(text="hello from " + request.headers["Host"], content_type="text/plain")


async def _json(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True})


async def _missing(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="no such page", content_type="text/html")


async def _binary(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"\x00\x01", content_type="application/octet-stream")


async def _big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for _ in range(64):
        await response.write(b"a" * 16_384)
    await response.write_eof()
    return response


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.Response(text="late", content_type="text/plain")


async def _slow_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(b"first ")
    await asyncio.sleep(5)
    await response.write_eof()
    return response


def _redirect(location: str) -> object:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(location)

    return handler


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[LocalServer]:
    routes = {
        "/text": _text,
        "/json": _json,
        "/missing": _missing,
        "/binary": _binary,
        "/big": _big,
        "/slow": _slow,
        "/slow-body": _slow_body,
        "/hop": _redirect("/text"),
        "/to-private": _redirect("http://10.1.2.3/secret"),
        "/to-metadata": _redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-loopback": _redirect("http://127.0.0.1:1/admin"),
        "/loop": _redirect("/loop"),
        "/to-ftp": _redirect("ftp://example.org/file"),
    }
    async with LocalServer(routes) as instance:  # type: ignore[arg-type]
        yield instance


@pytest.fixture
def fetch() -> HttpFetch:
    return HttpFetch(Settings(fetch_allow_hosts="127.0.0.1"))


async def test_fetches_text_with_status_and_content_type(
    fetch: HttpFetch, server: LocalServer
) -> None:
    result = await fetch.call({"url": f"{server.url}/text"})
    assert result == {
        "url": f"{server.url}/text",
        "status": 200,
        "content_type": "text/plain; charset=utf-8",
        "text": f"hello from 127.0.0.1:{server.port}",
        "truncated": False,
    }


async def test_an_allow_listed_name_keeps_its_host_header(server: LocalServer) -> None:
    fetch = HttpFetch(Settings(fetch_allow_hosts="localhost"))
    result = await fetch.call({"url": f"http://localhost:{server.port}/text"})
    assert result["text"] == f"hello from localhost:{server.port}"


async def test_an_allow_listed_cidr_opens_the_range(server: LocalServer) -> None:
    fetch = HttpFetch(Settings(fetch_allow_hosts="127.0.0.0/8"))
    result = await fetch.call({"url": f"{server.url}/json"})
    assert result["text"] == '{"ok": true}'


async def test_an_error_status_is_a_result(fetch: HttpFetch, server: LocalServer) -> None:
    result = await fetch.call({"url": f"{server.url}/missing"})
    assert result["status"] == 404
    assert result["text"] == "no such page"


async def test_redirects_are_followed_and_the_final_url_reported(
    fetch: HttpFetch, server: LocalServer
) -> None:
    result = await fetch.call({"url": f"{server.url}/hop"})
    assert result["url"] == f"{server.url}/text"
    assert result["status"] == 200


async def test_a_big_body_is_truncated_at_max_bytes(fetch: HttpFetch, server: LocalServer) -> None:
    result = await fetch.call({"url": f"{server.url}/big", "max_bytes": 20_000})
    assert result["truncated"] is True
    assert result["text"] == "a" * 20_000


async def test_a_slow_server_times_out(fetch: HttpFetch, server: LocalServer) -> None:
    for path in ("/slow", "/slow-body"):
        with pytest.raises(ToolTimeout) as caught:
            await fetch.call({"url": f"{server.url}{path}", "timeout_s": 0.5})
        assert caught.value.transient


async def test_a_disallowed_content_type_is_refused(fetch: HttpFetch, server: LocalServer) -> None:
    with pytest.raises(FetchRefused) as caught:
        await fetch.call({"url": f"{server.url}/binary"})
    assert caught.value.details["content_type"] == "application/octet-stream"
    assert "WRENCH_FETCH_CONTENT_TYPES" in caught.value.message
    assert not caught.value.transient


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/text",
        "http://localhost:{port}/text",
        "http://[::1]:{port}/text",
        "http://[::ffff:127.0.0.1]:{port}/text",
        "http://0.0.0.0:{port}/text",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
    ],
)
async def test_the_guard_refuses_internal_addresses_without_an_allow_list(
    url: str, server: LocalServer
) -> None:
    fetch = HttpFetch(Settings())
    before = len(server.seen)
    with pytest.raises(FetchRefused) as caught:
        await fetch.call({"url": url.format(port=server.port)})
    assert "WRENCH_FETCH_ALLOW_HOSTS" in caught.value.message
    assert caught.value.details["reason"]
    assert len(server.seen) == before, "a refused URL is never requested"


@pytest.mark.parametrize("path", ["/to-private", "/to-metadata", "/to-loopback"])
async def test_a_redirect_to_an_internal_address_is_refused(path: str, server: LocalServer) -> None:
    # Only the name is allowed, so the redirect's address literals are checked afresh.
    fetch = HttpFetch(Settings(fetch_allow_hosts="localhost"))
    with pytest.raises(FetchRefused) as caught:
        await fetch.call({"url": f"http://localhost:{server.port}{path}"})
    assert caught.value.details["reason"] in {"private", "a cloud metadata endpoint", "loopback"}


async def test_a_redirect_loop_stops_after_five_hops(fetch: HttpFetch, server: LocalServer) -> None:
    before = len(server.seen)
    with pytest.raises(FetchRefused, match="redirects more than 5"):
        await fetch.call({"url": f"{server.url}/loop"})
    assert len(server.seen) - before == MAX_REDIRECTS + 1


async def test_a_redirect_to_another_scheme_is_refused(
    fetch: HttpFetch, server: LocalServer
) -> None:
    with pytest.raises(FetchRefused, match="not an http or https URL"):
        await fetch.call({"url": f"{server.url}/to-ftp"})


async def test_a_closed_port_is_a_transient_fetch_failure(fetch: HttpFetch) -> None:
    with pytest.raises(FetchFailed) as caught:
        await fetch.call({"url": f"http://127.0.0.1:{free_port()}/"})
    assert caught.value.transient


def test_public_unicast_addresses_pass_the_guard() -> None:
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_takes_names_and_ranges() -> None:
    guard = SsrfGuard(" intranet.example ,10.0.0.0/8, 192.168.1.7 ")
    assert guard.allowed("INTRANET.example.", ipaddress.ip_address("10.9.9.9"))
    assert guard.allowed("any", ipaddress.ip_address("10.9.9.9"))
    assert guard.allowed("any", ipaddress.ip_address("192.168.1.7"))
    assert not guard.allowed("any", ipaddress.ip_address("192.168.1.8"))


async def test_health_names_the_allow_list(fetch: HttpFetch) -> None:
    health = await fetch.health()
    assert health.ok
    assert "127.0.0.1/32" in health.detail


# ---------------------------------------------------------------------------- HTTPS


def _certificates(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A private CA and a certificate for ``localhost`` that it signed: the server's
    context, and a client context that trusts only that CA."""
    now = datetime.now(UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("WrenchAI test CA"))
        .issuer_name(name("WrenchAI test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    client = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    return server, client


async def test_https_connects_to_the_checked_address_with_the_names_sni(
    tmp_path: Path,
) -> None:
    """The URL is rewritten to the checked IP, yet the certificate for the name verifies:
    SNI and verification use the original host name, and so does the Host header."""
    server_context, client_context = _certificates(tmp_path)
    async with LocalServer({"/text": _text}, ssl_context=server_context) as server:
        fetch = HttpFetch(Settings(fetch_allow_hosts="localhost"), verify=client_context)
        result = await fetch.call({"url": f"https://localhost:{server.port}/text"})
        assert result["text"] == f"hello from localhost:{server.port}"
        # The certificate names localhost only: asked for by address, verification fails.
        by_address = HttpFetch(Settings(fetch_allow_hosts="127.0.0.1"), verify=client_context)
        with pytest.raises(FetchFailed, match=r"CERTIFICATE_VERIFY_FAILED|IP address mismatch"):
            await by_address.call({"url": f"https://127.0.0.1:{server.port}/text"})


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4 of loopback
        ("2002:a9fe:a9fe::", "169.254.169.254"),  # 6to4 of the metadata endpoint
        ("2002:a00:1::1", "10.0.0.1"),  # 6to4 of a private address
        ("2002:c0a8:101::", "192.168.1.1"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),  # Teredo, private client
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
        ("64:ff9b:1::a9fe:a9fe", "169.254.169.254"),  # NAT64 local-use prefix
        ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible
    ],
)
def test_ipv6_addresses_carrying_an_internal_ipv4_are_refused_naming_it(
    address: str, carried: str
) -> None:
    """Python calls 2002::/16 global, so before this guard looked inside them a 6to4
    address of 127.0.0.1 or of the metadata endpoint passed."""
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and f"carrying {carried}" in reason


def test_a_6to4_address_of_a_public_ipv4_still_passes() -> None:
    assert refusal(ipaddress.ip_address("2002:808:808::1")) is None


@pytest.mark.parametrize("address", ["192.0.0.1", "192.0.0.9", "192.0.0.10", "192.0.0.170"])
def test_the_ietf_protocol_block_is_refused_even_where_python_calls_it_global(
    address: str,
) -> None:
    assert refusal(ipaddress.ip_address(address)) == "an IETF protocol assignment (192.0.0.0/24)"


@pytest.mark.parametrize(
    "url", ["http://[2002:7f00:1::]:{port}/text", "http://[2002:a9fe:a9fe::]/", "http://192.0.0.9/"]
)
async def test_fetching_a_6to4_or_ietf_protocol_address_is_refused_before_any_request(
    url: str, server: LocalServer
) -> None:
    fetch = HttpFetch(Settings())
    before = len(server.seen)
    with pytest.raises(FetchRefused) as caught:
        await fetch.call({"url": url.format(port=server.port)})
    assert "WRENCH_FETCH_ALLOW_HOSTS" in caught.value.message
    assert len(server.seen) == before
