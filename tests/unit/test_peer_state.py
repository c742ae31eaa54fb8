"""EtcdClient.peer_state against local sockets on 127.0.0.1: the three answers it gives."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcdsop.etcd import EtcdClient, TlsFiles
from etcdsop.pki import IssuedCert, Pki


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, IssuedCert, IssuedCert]:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.ensure_ca()
    return pki, pki.ensure_node("etcd-1", "127.0.0.1"), pki.ensure_admin()


@pytest.fixture
def client(certs: tuple[Pki, IssuedCert, IssuedCert]) -> EtcdClient:
    pki, _, admin = certs
    return EtcdClient(
        ["https://127.0.0.1:1"], TlsFiles(pki.ca_cert_path, admin.cert_path, admin.key_path)
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def url(sock: socket.socket) -> str:
    return f"https://127.0.0.1:{sock.getsockname()[1]}"


def test_nothing_listening_is_starting(client: EtcdClient, listener: socket.socket) -> None:
    assert client.peer_state(url(listener)) == "starting"  # bound, not listening: refused


def test_open_port_that_nobody_serves_is_starting(
    client: EtcdClient, listener: socket.socket
) -> None:
    listener.listen(8)  # the kernel completes TCP handshakes; nothing answers TLS
    assert client.peer_state(url(listener), timeout=0.3) == "starting"


def test_full_accept_queue_is_unreachable(client: EtcdClient, listener: socket.socket) -> None:
    listener.listen(0)  # Linux then drops further SYNs: connecting times out, as behind a firewall
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.settimeout(0.3)
        with contextlib.suppress(OSError):  # the last ones find the queue full already
            filler.connect(listener.getsockname())
        fillers.append(filler)
    try:
        assert client.peer_state(url(listener), timeout=0.3) == "unreachable"
    finally:
        for filler in fillers:
            filler.close()


def test_any_http_answer_is_serving(
    client: EtcdClient, listener: socket.socket, certs: tuple[Pki, IssuedCert, IssuedCert]
) -> None:
    _, node, _ = certs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(Path(node.cert_path), Path(node.key_path))
    listener.listen(1)

    def answer_once() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    assert client.peer_state(url(listener), timeout=2.0) == "serving"
    server.join(timeout=5)
