"""One webhook attempt over real sockets (webhooks/sender.py on webhooks/http1.py): each
test runs its own server in the test's event loop, scripted byte for byte where the
reply's shape matters, and TLS with a certificate authority made for the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rpa_gateway.http_client import _prepare
from rpa_gateway.webhooks.sender import RESPONSE_KEPT, Sender

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def answering(
    *replies: bytes, close: bool = False, hold: bool = False, close_after: int = 0
) -> tuple[Handler, list[bytes]]:
    """A server that answers each request with the next reply (``hold``: then keeps the
    connection open until the client closes it).  ``seen`` gets each request, and a
    ``b"CONNECTION"`` marker for each connection accepted."""
    seen: list[bytes] = []
    queue = list(replies)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(b"CONNECTION")
        try:
            while queue:
                seen.append(await read_request(reader))
                writer.write(queue.pop(0))
                await writer.drain()
                if close or len(replies) - len(queue) == close_after:
                    break
            if hold:
                await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return handle, seen


async def serving(handle: Handler, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)


def url(server: asyncio.Server, path: str = "/hook?x=1", scheme: str = "http") -> str:
    port = server.sockets[0].getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}{path}"


def sender(timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> Sender:
    return Sender(timeout=timeout, allow_private=True, user_agent="rpa-gateway/t", ssl_context=tls)


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


def test_a_post_carries_its_headers_and_body_and_the_connection_is_kept() -> None:
    async def scenario() -> None:
        handle, seen = answering(NO_CONTENT, NO_CONTENT)
        server = await serving(handle)
        one = sender()
        first = await one.send(url(server), {"webhook-id": "msg_1"}, b'{"a":1}')
        second = await one.send(url(server), {"webhook-id": "msg_2"}, b'{"a":2}')
        await one.aclose()
        server.close()
        assert (first.status, second.status) == (204, 204)
        assert seen.count(b"CONNECTION") == 1 and len(seen) == 3, "both on one connection"
        head, body = seen[1].split(b"\r\n\r\n")
        assert head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert b"\r\nwebhook-id: msg_1" in head and b"\r\nUser-Agent: rpa-gateway/t" in head
        assert b"\r\nHost: 127.0.0.1:" in head and body == b'{"a":1}'

    asyncio.run(scenario())


def test_replies_with_a_body_keep_the_connection_and_early_hints_are_skipped() -> None:
    async def scenario() -> None:
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok
        handle, seen = answering(ok, hints, ok)
        server = await serving(handle)
        one = sender()
        replies = [await one.send(url(server), {}, b"{}") for _ in range(3)]
        await one.aclose()
        server.close()
        assert [(r.status, r.response) for r in replies] == [(200, "ok")] * 3
        assert seen.count(b"CONNECTION") == 1, "all three on one connection"

    asyncio.run(scenario())


def test_a_protocol_switch_is_a_failed_attempt() -> None:
    async def scenario() -> None:
        switch = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        handle, _ = answering(switch)
        server = await serving(handle)
        attempt = await sender().send(url(server), {}, b"{}")
        server.close()
        assert attempt.status is None and "switched protocols" in (attempt.error or "")

    asyncio.run(scenario())


def test_a_reply_cut_off_on_a_kept_connection_is_not_sent_again() -> None:
    async def scenario() -> None:
        # The second reply breaks off, and the connection with it; a third is ready for a
        # request sent again, which must not come: the server had read the second.
        cut = b"HTTP/1.1 200 O"
        handle, seen = answering(NO_CONTENT, cut, NO_CONTENT, close_after=2)
        server = await serving(handle)
        one = sender()
        first = await one.send(url(server), {}, b"{}")
        second = await one.send(url(server), {}, b"{}")
        await one.aclose()
        server.close()
        assert first.status == 204 and second.status is None and second.error
        assert seen.count(b"CONNECTION") == 1 and len(seen) == 3, "not sent again"

    asyncio.run(scenario())


def test_hosts_are_read_as_aiohttp_reads_them() -> None:
    origin, target, host = _prepare("https://faß.de/in box?q=a b")
    assert origin == ("https", "xn--fa-hia.de", 443), "IDNA 2008: not fass.de"
    assert (target, host) == ("/in%20box?q=a+b", "Host: xn--fa-hia.de")
    origin, target, host = _prepare("http://[::1]:8080/")
    assert origin == ("http", "::1", 8080) and host == "Host: [::1]:8080"


def test_a_redirect_is_not_followed() -> None:
    async def scenario() -> None:
        moved = (
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n"
        )
        handle, seen = answering(moved)
        server = await serving(handle)
        attempt = await sender().send(url(server), {}, b"{}")
        server.close()
        assert attempt.status == 302 and not attempt.delivered and len(seen) == 2

    asyncio.run(scenario())


def test_a_reply_is_read_to_a_bound_and_its_first_kilobyte_kept() -> None:
    async def scenario() -> None:
        # A reply that says 100 MB and sends 1 MB, then nothing: read to the bound, the
        # attempt ends at once (reading on would wait for the rest until the timeout).
        head = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % (100 * 1024 * 1024)
        handle, _ = answering(head + b"x" * (1024 * 1024), hold=True)
        server = await serving(handle)
        attempt = await sender(timeout=3.0).send(url(server), {}, b"{}")
        server.close()
        assert attempt.status == 500 and attempt.response == "x" * RESPONSE_KEPT

    asyncio.run(scenario())


def test_chunked_replies_and_replies_read_to_the_close_are_whole() -> None:
    async def scenario() -> None:
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
        handle, _ = answering(chunked)
        server = await serving(handle)
        first = await sender().send(url(server), {}, b"{}")
        server.close()
        handle, _ = answering(to_close, close=True)
        server = await serving(handle)
        second = await sender().send(url(server), {}, b"{}")
        server.close()
        assert (first.status, first.response) == (200, "abcde")
        assert (second.status, second.response) == (200, "until the end")

    asyncio.run(scenario())


def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    async def scenario() -> None:
        # The first connection answers once, then takes the next request and closes
        # without a byte of reply (as a server's idle timeout racing the request does);
        # the request goes again on a new connection, which answers.
        connections: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            await read_request(reader)
            if len(connections) == 1:
                writer.write(NO_CONTENT)
                await read_request(reader)
            else:
                writer.write(NO_CONTENT)
                await writer.drain()
            writer.close()

        server = await serving(handle)
        one = sender()
        first = await one.send(url(server), {}, b"{}")
        second = await one.send(url(server), {}, b"{}")
        await one.aclose()
        server.close()
        assert (first.status, second.status, len(connections)) == (204, 204, 2)

    asyncio.run(scenario())


def test_no_reply_in_time_is_a_timeout_and_a_refused_port_an_error() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        server = await serving(silent)
        slow = await sender(timeout=0.3).send(url(server), {}, b"{}")
        target = url(server)
        server.close()
        await server.wait_closed()
        refused = await sender().send(target, {}, b"{}")
        assert (slow.status, slow.error) == (None, "timed out")
        assert refused.status is None and refused.error

    asyncio.run(scenario())


def test_https_is_verified_against_the_trusted_authorities(tmp_path: Path) -> None:
    server_tls, trusting = tls_pair(tmp_path)

    async def scenario() -> None:
        handle, _ = answering(NO_CONTENT, NO_CONTENT)
        server = await serving(handle, server_tls)
        trusted = await sender(tls=trusting).send(url(server, scheme="https"), {}, b"{}")
        untrusted = await sender().send(url(server, scheme="https"), {}, b"{}")
        server.close()
        assert trusted.status == 204
        assert untrusted.status is None and "certificate" in (untrusted.error or "").lower()

    asyncio.run(scenario())


def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 signed by a test authority, and
    a client context trusting that authority only."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        name: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test authority")])
    ca = certificate("test authority", ca_key, ca_name, ca_key, True)
    leaf = certificate("127.0.0.1", server_key, ca_name, ca_key, False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server, client
