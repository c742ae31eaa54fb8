"""How the etcd client sorts transport failures, against real TLS sockets on 127.0.0.1.

"Never sent" lets a change go to the next endpoint; "outcome unknown" must not.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from etcdsop.etcd import (
    EtcdClient,
    EtcdOutcomeUnknown,
    EtcdTlsError,
    EtcdUnreachable,
    TlsFiles,
    transport_error,
)
from etcdsop.pki import Pki


def pki(root: Path) -> tuple[TlsFiles, Path, Path]:
    p = Pki(root)
    p.ensure_node("etcd-1", "127.0.0.1", 30)
    p.ensure_admin()
    tls = TlsFiles(root / "ca/ca.crt", root / "etcdsop/admin.crt", root / "etcdsop/admin.key")
    return tls, root / "etcd/etcd-1.crt", root / "etcd/etcd-1.key"


class Server:
    """A TLS endpoint that reads one request and then behaves as told."""

    def __init__(self, cert: Path, key: Path, behaviour: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.behaviour = behaviour
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        try:
            raw, _ = self.listener.accept()
        except OSError:
            return
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
            if self.behaviour == "answer":  # every request on this connection: 200 {}
                while read_request(conn):
                    self.requests += 1
                    send_json(conn, 200, b"{}")
                return
            if self.behaviour == "election":  # "leader changed" twice, then answers
                while read_request(conn):
                    self.requests += 1
                    if self.requests <= 2:
                        send_json(conn, 503, b'{"error":"etcdserver: leader changed","code":14}')
                    else:
                        send_json(conn, 200, b'{"token":"t","header":{"member_id":"7"}}')
                return
            conn.recv(65536)
            self.requests += 1
            if self.behaviour == "close":
                conn.close()
            elif self.behaviour == "silent":
                threading.Event().wait(3)
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def send_json(conn: ssl.SSLSocket, status: int, body: bytes) -> None:
    conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n".encode())
    conn.sendall(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def read_request(conn: ssl.SSLSocket) -> bool:
    """One whole HTTP request (headers, then Content-Length bytes); False at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += conn.recv(65536)
    return True


@pytest.fixture
def certs(tmp_path: Path) -> Iterator[tuple[TlsFiles, Path, Path]]:
    yield pki(tmp_path / "ours")


def test_a_server_of_another_ca_is_a_tls_refusal_never_sent(
    certs: tuple[TlsFiles, Path, Path], tmp_path: Path
) -> None:
    _other_tls, other_cert, other_key = pki(tmp_path / "other")
    server = Server(other_cert, other_key, "close")
    ours = certs[0]
    with pytest.raises(EtcdTlsError):
        EtcdClient([server.url], ours, timeout=2).call("/v3/cluster/member/list")
    assert server.requests == 0


def test_a_connection_lost_after_sending_is_an_unknown_outcome_for_a_change(
    certs: tuple[TlsFiles, Path, Path],
) -> None:
    tls, cert, key = certs
    first, second = Server(cert, key, "close"), Server(cert, key, "close")
    client = EtcdClient([first.url, second.url], tls, timeout=2)
    with pytest.raises(EtcdOutcomeUnknown):
        client.member_remove(42)
    assert (first.requests, second.requests) == (1, 0), "a change reached two members"


def test_a_read_timeout_is_unknown_for_a_change_and_moves_on_for_a_read(
    certs: tuple[TlsFiles, Path, Path],
) -> None:
    tls, cert, key = certs
    silent = Server(cert, key, "silent")
    with pytest.raises(EtcdOutcomeUnknown):
        EtcdClient([silent.url], tls, timeout=1).member_promote(42)
    silent_again, closing = Server(cert, key, "silent"), Server(cert, key, "close")
    with pytest.raises(EtcdUnreachable):  # both tried: a read may go anywhere
        EtcdClient([silent_again.url, closing.url], tls, timeout=1).member_list()
    assert (silent_again.requests, closing.requests) == (1, 1)


def test_a_refused_connection_is_never_sent() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    tls = TlsFiles(Path("/nonexistent"), Path("/nonexistent"), Path("/nonexistent"))
    with pytest.raises(EtcdUnreachable) as info:
        EtcdClient([f"https://127.0.0.1:{port}"], tls, timeout=1).member_remove(1)
    assert not isinstance(info.value, EtcdOutcomeUnknown)


def test_an_endpoint_that_did_not_answer_is_asked_last_afterwards(
    certs: tuple[TlsFiles, Path, Path],
) -> None:
    # A member cut off from its peers answers reads only after etcd's request timeout:
    # one slow call, not one per call.
    tls, cert, key = certs
    silent, answering = Server(cert, key, "silent"), Server(cert, key, "answer")
    client = EtcdClient([silent.url, answering.url], tls, timeout=1)
    for _ in range(3):
        client.call("/v3/kv/range", {"key": "eA=="}, auth=False)
    assert (silent.requests, answering.requests) == (1, 3)
    assert client.endpoints == [answering.url, silent.url]


def test_a_refused_connection_reads_as_what_happened_without_urllib3_reprs() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=2))
    endpoint = f"https://127.0.0.1:{port}"
    with pytest.raises(urllib3.exceptions.HTTPError) as caught:
        pool.request("GET", endpoint)
    message = transport_error(endpoint, caught.value).message
    assert (
        message == f"{endpoint}: no answer (Failed to establish a new connection: "
        "[Errno 111] Connection refused)"
    )


def test_a_login_during_an_election_is_tried_again_not_read_as_a_member_down(
    certs: tuple[TlsFiles, Path, Path],
) -> None:
    # A member whose peers just came back answers the login "leader changed" for a
    # moment; status read that as the member down (and exited 2 on a healthy cluster).
    tls, cert, key = certs
    electing = Server(cert, key, "election")
    client = EtcdClient([electing.url], tls, timeout=2, user="root", password="pw")
    assert client.status(electing.url).member_id == 7
    assert electing.requests == 4  # two refused logins, the login, the status
