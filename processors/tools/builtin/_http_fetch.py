"""http.fetch: a guarded HTTP GET.

The guard is against server-side request forgery: a URL chosen by a model (or by whoever
wrote the page it read) must not reach the worker's own network. Before every request —
the first and each redirect hop, followed by hand, at most five — the host is resolved and
every address it resolves to is checked; loopback, private, link-local, multicast,
reserved, unspecified, shared (CGNAT), IETF protocol (192.0.0.0/24) and otherwise
non-global addresses are refused, and so are the cloud metadata endpoints, unless the host
or the address is in ``WRENCH_FETCH_ALLOW_HOSTS`` (host names or CIDR ranges). An IPv6
address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64) is
judged by the IPv4 address it carries too: ``2002:7f00:1::`` reaches 127.0.0.1 through any
6to4 relay on the path, and Python's ``ipaddress`` calls it global.

The connection then goes to the very address that was checked: the URL is rewritten to
that IP, the original ``Host`` header is sent, and for HTTPS the original name is used for
SNI and certificate verification (httpcore's ``sni_hostname`` extension). A DNS answer
that changes between the check and the connection (DNS rebinding) therefore cannot steer
the request elsewhere. Proxies from the environment are ignored for the same reason.

The body is streamed and reading stops at ``max_bytes`` (``truncated``); the content type
must be in ``WRENCH_FETCH_CONTENT_TYPES``. A non-2xx status is a result, not an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from processors.tools.builtin._base import BuiltinTool, FetchFailed, FetchRefused, ToolTimeout
from processors.tools.descriptors import HTTP_FETCH
from wrenchai.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# AWS, GCP, Azure and OpenStack answer on 169.254.169.254, AWS also on fd00:ec2::254,
# Alibaba Cloud on 100.100.100.200. The ranges around them are refused anyway; naming
# them gives a clearer refusal.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_USER_AGENT = "WrenchAI-http.fetch/1.0"


# 192.0.0.0/24 is IETF protocol assignments; ``ipaddress`` calls two of its addresses
# (192.0.0.9 and .10, anycast) global, but nothing a fetch wants lives there.
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")
# NAT64 (RFC 6052's well-known prefix, RFC 8215's local-use one): a translator turns the
# last 32 bits into the IPv4 address it connects to.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries and the scheme that carries them, or
    ``("", [])``. A Teredo address names two (its server's and its client's)."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", [address.ipv4_mapped]
    if address.sixtofour is not None:
        return "6to4", [address.sixtofour]
    if address.teredo is not None:
        return "Teredo", list(address.teredo)
    if any(address in prefix for prefix in _NAT64):
        return "NAT64", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, deprecated IPv4-compatible
        return "IPv4-compatible", [ipaddress.IPv4Address(int(address))]
    return "", []


def refusal(address: IPAddress) -> str | None:
    """Why the guard refuses ``address``, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        scheme, carried = embedded_ipv4(address)
        if scheme == "IPv4-mapped":
            return refusal(carried[0])
        for ipv4 in carried:
            reason = refusal(ipv4)
            if reason is not None:
                article = "an" if scheme[0] in "AEIOU" else "a"
                return f"{article} {scheme} address carrying {ipv4}, which is {reason}"
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata endpoint"),
        (address in _IETF_PROTOCOL, "an IETF protocol assignment (192.0.0.0/24)"),
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
    )
    return next((reason for refused, reason in checks if refused), None)


@dataclass(frozen=True)
class Target:
    """Where one request goes: the checked address, and the name it was asked for."""

    url: httpx.URL
    address: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        port = self.url.port
        host = self.url.raw_host.decode("ascii")
        return host if port is None else f"{host}:{port}"


class SsrfGuard:
    """Resolves hosts and refuses addresses that point into the worker's own network."""

    def __init__(self, allow: str = "") -> None:
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for item in (part.strip() for part in allow.split(",")):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.hosts.add(item.lower().rstrip("."))

    def allowed(self, host: str, address: IPAddress) -> bool:
        """Whether the allow-list lets this host or address through."""
        if host.lower().rstrip(".") in self.hosts:
            return True
        return any(address in network for network in self.networks)

    async def check(self, url: httpx.URL) -> Target:
        """The address to connect to for ``url``; FetchRefused when the guard says no."""
        if url.scheme not in ("http", "https"):
            raise FetchRefused(
                f"{url} is not an http or https URL; http.fetch follows only those.",
                url=str(url),
            )
        host = url.host
        addresses = await _resolve(host, url.port or (443 if url.scheme == "https" else 80))
        for address in addresses:
            reason = refusal(address)
            if reason is not None and not self.allowed(host, address):
                where = host if str(address) == host else f"{host} resolves to {address}, which"
                raise FetchRefused(
                    f"Refused to fetch {url}: {where} is {reason}. If this host is meant "
                    "to be reachable, add it (or its range, as a CIDR) to "
                    "WRENCH_FETCH_ALLOW_HOSTS.",
                    url=str(url),
                    host=host,
                    address=str(address),
                    reason=reason,
                )
        return Target(url=url, address=addresses[0])


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host``; an IP literal is its own answer."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchFailed(
            f"Cannot resolve {host}: {exc.strerror}. Check the host name and the worker's DNS.",
            transient=exc.errno not in (socket.EAI_NONAME, socket.EAI_NODATA),
            host=host,
        ) from exc
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchFailed(f"{host} resolves to no address.", host=host, transient=False)
    return addresses


class HttpFetch(BuiltinTool):
    """HTTP GET with a size cap, a timeout, a content-type allow-list and an SSRF guard."""

    spec = HTTP_FETCH

    def __init__(self, settings: Settings, *, verify: ssl.SSLContext | bool = True) -> None:
        """``verify`` is httpx's: True checks certificates against the bundled CAs, an
        SSLContext against its own (a private CA), False not at all."""
        super().__init__(max_result_bytes=settings.max_event_bytes)
        self._verify = verify
        # The default read must fit in an event, with room for the JSON escaping of the text.
        self._max_bytes = min(settings.fetch_max_bytes, settings.max_event_bytes // 2)
        self._timeout_s = settings.fetch_timeout_s
        self._content_types = frozenset(
            part.strip().lower() for part in settings.fetch_content_types.split(",") if part
        )
        self.guard = SsrfGuard(settings.fetch_allow_hosts)

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        timeout_s = float(tool_input.get("timeout_s", self._timeout_s))
        max_bytes = int(tool_input.get("max_bytes", self._max_bytes))
        try:
            async with asyncio.timeout(timeout_s):
                return await self._fetch(httpx.URL(tool_input["url"]), max_bytes, timeout_s)
        except TimeoutError:
            raise ToolTimeout(
                f"Fetching {tool_input['url']} took longer than {timeout_s:g}s; try again "
                "later or pass a larger timeout_s.",
                tool=self.spec.name,
                url=tool_input["url"],
            ) from None

    async def _fetch(self, url: httpx.URL, max_bytes: int, timeout_s: float) -> dict[str, Any]:
        # trust_env=False: an HTTP(S)_PROXY from the environment would connect on our behalf
        # to an address the guard never saw.
        async with httpx.AsyncClient(
            trust_env=False, timeout=timeout_s, verify=self._verify
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                target = await self.guard.check(url)
                response = await self._send(client, target)
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        url = url.join(location)
                        continue
                    return await self._read(url, response, max_bytes)
                finally:
                    await response.aclose()
        raise FetchRefused(
            f"{url} redirects more than {MAX_REDIRECTS} times; fetch the final URL directly.",
            url=str(url),
        )

    async def _send(self, client: httpx.AsyncClient, target: Target) -> httpx.Response:
        extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
        request = client.build_request(
            "GET",
            target.pinned_url,
            headers={"Host": target.host_header, "User-Agent": _USER_AGENT},
            extensions=extensions,
        )
        try:
            return await client.send(request, stream=True)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise FetchFailed(
                f"Fetching {target.url} (at {target.address}) failed: "
                f"{type(exc).__name__}: {exc}. Check that the server is up and speaks HTTP.",
                url=str(target.url),
                address=str(target.address),
            ) from exc

    async def _read(self, url: httpx.URL, response: httpx.Response, limit: int) -> dict[str, Any]:
        content_type = response.headers.get("content-type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in self._content_types:
            raise FetchRefused(
                f"{url} answered with content type {media_type or 'none'!r}, which is not "
                f"in WRENCH_FETCH_CONTENT_TYPES ({', '.join(sorted(self._content_types))}).",
                url=str(url),
                content_type=media_type,
            )
        body = bytearray()
        truncated = False
        try:
            async for chunk in response.aiter_bytes():
                room = limit - len(body)
                if len(chunk) > room:
                    body += chunk[:room]
                    truncated = True
                    break
                body += chunk
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise FetchFailed(
                f"Reading the body of {url} failed: {type(exc).__name__}: {exc}.", url=str(url)
            ) from exc
        return {
            "url": str(url),
            "status": response.status_code,
            "content_type": content_type,
            "text": _decode(bytes(body), response),
            "truncated": truncated,
        }

    async def _probe(self) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        allowed = sorted(self.guard.hosts) + [str(n) for n in self.guard.networks]
        return True, (
            "resolver answers; SSRF guard on, allow-list: "
            f"{', '.join(allowed) or 'empty'}; content types: "
            f"{', '.join(sorted(self._content_types))}"
        )


def _decode(body: bytes, response: httpx.Response) -> str:
    """The body as text in its declared charset; UTF-8 when that charset is unknown."""
    try:
        return body.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
