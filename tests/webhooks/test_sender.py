"""The webhook sender against real local servers: keep-alive reuse, hang-ups, long and chunked
answers, and TLS checked against the URL's host while the socket goes to the validated address."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gpufleet.webhooks.sender import Sender
from gpufleet.webhooks.ssrf import Target

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        size = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
        self.requests.append(head + await reader.readexactly(size))
        return head


@asynccontextmanager
async def serve(
    answer: Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    state = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await answer(state, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


def target(port: int, *, scheme: str = "http", host: str = "hooks.test") -> Target:
    return Target(
        url=f"{scheme}://{host}:{port}/in", scheme=scheme, host=host, port=port, target="/in", address="127.0.0.1"
    )


async def keep_alive(s: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await s.request(reader)
        writer.write(OK)
        await writer.drain()


async def test_deliveries_to_one_receiver_share_a_kept_alive_connection() -> None:
    async with serve(keep_alive) as s:
        sender = Sender(timeout_s=2)
        outcomes = [await sender.send(target(s.port), b'{"i":%d}' % i, {"webhook-id": f"msg_{i}"}) for i in range(20)]
        await sender.aclose()
    assert [o.status_code for o in outcomes] == [200] * 20 and outcomes[0].body == "ok"
    assert s.connections == 1
    first = s.requests[0]
    assert first.startswith(b"POST /in HTTP/1.1\r\n") and first.endswith(b'\r\n\r\n{"i":0}')
    assert f"host: hooks.test:{s.port}\r\n".encode() in first and b"webhook-id: msg_0\r\n" in first


async def test_a_connection_the_receiver_closed_while_idle_is_not_used_again() -> None:
    async def one_then_hang_up(s: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await s.request(reader)
        writer.write(OK)  # keep-alive by default in HTTP/1.1, but the receiver hangs up anyway
        await writer.drain()

    async with serve(one_then_hang_up) as s:
        sender = Sender(timeout_s=2)
        first = await sender.send(target(s.port), b"{}", {})
        await asyncio.sleep(0.1)
        second = await sender.send(target(s.port), b"{}", {})
        await sender.aclose()
    assert (first.status_code, second.status_code, second.error) == (200, 200, None)
    assert s.connections == 2


async def test_long_answers_are_cut_and_chunked_ones_read() -> None:
    async def answers(s: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await s.request(reader)
        writer.write(
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nretry-after: 7\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        await s.request(reader)
        body = b"x" * 10_000
        writer.write(b"HTTP/1.1 500 Oops\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.read()  # until the sender gives the half-read connection up

    async with serve(answers) as s:
        sender = Sender(timeout_s=2)
        chunked = await sender.send(target(s.port), b"{}", {})
        long = await sender.send(target(s.port), b"{}", {})
        after = await sender.send(target(s.port), b"{}", {})  # not on the half-read connection
        await sender.aclose()
    assert (chunked.status_code, chunked.body, chunked.headers["retry-after"]) == (201, "abcde", "7")
    assert long.status_code == 500 and long.body == "x" * 4096
    assert after.status_code == 201 and s.connections == 2


async def test_a_hang_up_without_an_answer_is_an_error_in_words() -> None:
    async def hang_up(s: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await s.request(reader)

    async with serve(hang_up) as s:
        sender = Sender(timeout_s=2)
        outcome = await sender.send(target(s.port), b"{}", {})
        await sender.aclose()
    assert outcome.status_code is None and "closed the connection without a response" in (outcome.error or "")


def certificate(tmp: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "cert.pem").write_bytes(pem)
    (tmp / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


async def test_tls_checks_the_urls_host_and_sends_it_as_sni_while_connecting_to_the_address(tmp_path: Path) -> None:
    server_tls, client_tls = certificate(tmp_path, "hooks.test")
    names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    async with serve(keep_alive, tls=server_tls) as s:
        sender = Sender(timeout_s=2, tls=client_tls)
        good = await sender.send(target(s.port, scheme="https"), b"{}", {})
        wrong = await sender.send(target(s.port, scheme="https", host="other.test"), b"{}", {})
        await sender.aclose()
    assert good.status_code == 200 and names[0] == "hooks.test"
    assert wrong.status_code is None and "certificate verify failed" in (wrong.error or "").lower()
    assert len(s.requests) == 1
