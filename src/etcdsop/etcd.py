"""A small typed client for etcd's v3 JSON gateway (as Patroni uses it), over urllib3.

Only what etcdsop needs: cluster membership, maintenance status, auth admin, kv.
Keys and values are base64 on the wire; 64-bit ids are decimal strings.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import urllib3

from etcdsop.errors import ClusterError, InputError
from etcdsop.etcdmetrics import MemberMetrics, parse_metrics

# Answers that mean "this member does not serve that call, ask another one": the
# request was refused before it reached raft, so sending it elsewhere is safe.
ASK_ANOTHER = (
    "rpc not supported for learner",
    "etcdserver: not capable",
)
# "No leader" is refused before raft for reads; a change forwarded to a leader
# (promote on 3.4) may answer it after the leader applied it: unknown, for changes.
NO_LEADER = "etcdserver: no leader"
# Answers after which the request may still commit (etcd gave up waiting, not the
# proposal): a non-idempotent call is never re-sent on these without reading state.
OUTCOME_UNKNOWN = (
    "request timed out",
    "leader changed",
    "request cancelled",
    "server stopped",
    "transport is closing",
    "client connection is closing",
    # The gateway's own gRPC link to a member that is shutting down (just removed, say)
    # broke mid-call: "transport: missing content-type field", "transport: Error ...".
    "transport: ",
)


# How long a login answered "leader changed" (an election just ended) is tried again.
AUTH_ELECTION_RETRY_S = 3.0


def request_timeout(election_timeout_ms: int) -> float:
    """etcd's own request timeout (5 s + 2 x election timeout), in seconds."""
    return 5.0 + 2 * election_timeout_ms / 1000


class EtcdApiError(ClusterError):
    """etcd answered with an error (gRPC code + message)."""

    def __init__(self, endpoint: str, code: int, message: str) -> None:
        super().__init__(f"{endpoint}: etcd error: {message}")
        self.endpoint = endpoint
        self.code = code
        self.etcd_message = message

    @property
    def ask_another(self) -> bool:
        """Refused before raft, whatever the call: safe to send to another member."""
        return any(t in self.etcd_message for t in ASK_ANOTHER)

    @property
    def no_leader(self) -> bool:
        return NO_LEADER in self.etcd_message


class _TokenRefused(EtcdApiError):
    """A snapshot refused for its token before any byte was sent: safe to ask again."""


class EtcdUnreachable(ClusterError):
    """The request never reached etcd (refused, connect timeout, TLS handshake)."""


class EtcdTlsError(EtcdUnreachable):
    """Something answers TLS on the port but the handshake failed: not our CA, or a
    certificate it refuses. Never the same as "no cluster here"."""


class EtcdOutcomeUnknown(ClusterError):
    """The request was sent but no verdict came back (read timeout, connection lost,
    etcd's "request timed out"): it may or may not have been applied."""


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class MemberInfo:
    id: int
    name: str  # empty while the member has not started
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def started(self) -> bool:
        return bool(self.name)

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"


@dataclass(frozen=True)
class Permission:
    """One key range of a role: READ, WRITE or READWRITE on [key, range_end)."""

    perm_type: str
    key: bytes
    range_end: bytes

    @classmethod
    def prefix(cls, perm_type: str, prefix: str) -> Permission:
        return cls(perm_type, prefix.encode(), _prefix_end(prefix))


# The gateway may answer the enum as a number or as its name.
_PERM_NAMES: dict[object, str] = {0: "READ", 1: "WRITE", 2: "READWRITE"}
_PERM_NAMES.update({name: name for name in ("READ", "WRITE", "READWRITE")})


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: str
    member_id: int
    leader: int
    version: str
    db_size: int
    raft_term: int
    raft_index: int
    is_learner: bool
    latency_ms: float
    db_size_in_use: int = 0  # what is left after a defragment (0: etcd did not say)


@dataclass(frozen=True)
class Alarm:
    """An active alarm: NOSPACE (db over quota-backend-bytes) or CORRUPT, per member."""

    member_id: int
    alarm: str

    @property
    def hex_id(self) -> str:
        return f"{self.member_id:x}"


# AlarmType in rpc.proto; the gateway may answer the enum as a number or as its name.
_ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> bytes:
    """The range end that selects every key starting with `prefix` (etcd's rule)."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


def parse_member(raw: dict[str, Any]) -> MemberInfo:
    return MemberInfo(
        id=int(raw.get("ID", 0)),
        name=str(raw.get("name", "")),
        peer_urls=tuple(raw.get("peerURLs", ())),
        client_urls=tuple(raw.get("clientURLs", ())),
        is_learner=bool(raw.get("isLearner", False)),
    )


class EtcdClient:
    """Talks to the given endpoints, first one that answers wins.

    The next endpoint is tried only when the request surely was not applied (no
    connection, or etcd refused it before raft: a learner, no leader). After a sent
    request lost its answer, a read goes on to the next endpoint but a change
    (`idempotent=False`) raises EtcdOutcomeUnknown: the caller reads and decides.
    The read timeout should exceed etcd's own request timeout (`request_timeout`).

    Authenticates lazily with user/password when given; an `auth not enabled`
    answer means we simply go on without a token. The token is refreshed once on
    `invalid auth token` (simple tokens expire after ~5 min).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        tls: TlsFiles,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = request_timeout(1000) + 1,
    ) -> None:
        if not endpoints:
            raise InputError("no etcd endpoint to talk to")
        self.endpoints = list(endpoints)
        self.user = user
        self._password = password
        self._token: str | None = None
        self._auth_checked = False
        self._timeout = timeout
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(tls.ca_cert),
            cert_file=str(tls.client_cert),
            key_file=str(tls.client_key),
            retries=False,
            maxsize=8,  # parallel callers (status of every member) share one pool
            timeout=urllib3.Timeout(connect=min(timeout, 3.0), read=timeout),
        )
        self.tls = tls

    def with_timeout(self, timeout: float) -> EtcdClient:
        """The same endpoints and credentials with another read timeout (own pool)."""
        return EtcdClient(
            self.endpoints, self.tls, user=self.user, password=self._password, timeout=timeout
        )

    def for_endpoints(self, endpoints: Sequence[str]) -> EtcdClient:
        """A client with the same credentials aimed at other endpoints."""
        other = EtcdClient(
            endpoints, self.tls, user=self.user, password=self._password, timeout=self._timeout
        )
        other._pool = self._pool
        other._token = self._token
        other._auth_checked = self._auth_checked
        return other

    # -- transport -----------------------------------------------------------------
    def _post_one(
        self,
        endpoint: str,
        path: str,
        body: dict[str, Any],
        auth: bool,
        timeout: float | None = None,
    ) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth and self._token:
            headers["Authorization"] = self._token
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = urllib3.Timeout(connect=min(self._timeout, 3.0), read=timeout)
        try:
            resp = self._pool.request(
                "POST", endpoint + path, body=json.dumps(body).encode(), headers=headers, **extra
            )
        except urllib3.exceptions.HTTPError as exc:
            raise transport_error(endpoint, exc) from exc
        try:
            data = json.loads(resp.data or b"{}")
        except ValueError as exc:
            raise EtcdUnreachable(f"{endpoint}: not an etcd answer (HTTP {resp.status})") from exc
        if resp.status != 200 or ("code" in data and data.get("code")):
            message = str(data.get("message") or data.get("error") or f"HTTP {resp.status}")
            if any(t in message for t in OUTCOME_UNKNOWN):
                raise EtcdOutcomeUnknown(f"{endpoint}: {message}")
            raise EtcdApiError(endpoint, int(data.get("code", 0) or 0), message)
        return data

    def call(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        endpoint: str | None = None,
        idempotent: bool = True,
        auth: bool = True,
    ) -> Any:
        """POST to one endpoint (or the first that serves it), authenticating as needed."""
        body = body or {}
        targets = [endpoint] if endpoint else list(self.endpoints)
        errors: list[str] = []
        tls_refusals = 0
        for index, target in enumerate(targets):
            if index and not endpoint:
                self._demote(targets[index - 1])
            try:
                try:
                    if auth:
                        self._ensure_token(target)
                except EtcdOutcomeUnknown as exc:  # only authenticating timed out
                    raise EtcdUnreachable(exc.message) from exc
                try:
                    return self._post_one(target, path, body, auth=auth)
                except EtcdApiError as exc:
                    # The token expired, or auth was enabled since we found it off (create
                    # enables it while the lock taken before is still to be released).
                    stale = "invalid auth token" in exc.etcd_message or (
                        "user name is empty" in exc.etcd_message and self._token is None
                    )
                    if not stale or not self.user or not auth:
                        raise
                    self._token = None
                    self._auth_checked = False
                    self._ensure_token(target)
                    return self._post_one(target, path, body, auth=True)
            except EtcdUnreachable as exc:
                errors.append(exc.message)
                tls_refusals += isinstance(exc, EtcdTlsError)
            except EtcdApiError as exc:
                if exc.no_leader and not idempotent:
                    raise EtcdOutcomeUnknown(exc.message) from exc
                if not (exc.ask_another or exc.no_leader):
                    raise
                errors.append(exc.message)
            except EtcdOutcomeUnknown as exc:
                if not idempotent:
                    if not endpoint:
                        self._demote(target)
                    raise
                errors.append(exc.message)
        kind = EtcdTlsError if errors and tls_refusals == len(errors) else EtcdUnreachable
        raise kind("; ".join(errors) or "no etcd endpoint answered")

    def _demote(self, failed: str) -> None:
        """An endpoint that did not serve a call goes last for the calls that follow: a
        member cut off from its peers answers every read only after etcd's request
        timeout (8 s here), and a command makes dozens of calls."""
        if len(self.endpoints) > 1 and failed in self.endpoints and self.endpoints[-1] != failed:
            self.endpoints = [e for e in self.endpoints if e != failed] + [failed]

    def _ensure_token(self, endpoint: str) -> None:
        if self._auth_checked or not self.user:
            return
        try:
            self._token = self._authenticate(endpoint)
        except EtcdApiError as exc:
            if "authentication is not enabled" not in exc.etcd_message:
                raise
            self._token = None
        self._auth_checked = True

    def _authenticate(self, endpoint: str) -> str:
        """A token. Authenticate goes through raft, so a member in the middle of an
        election answers "leader changed" although it is fine a moment later: that
        answer is retried briefly. Safe to re-send: it changes nothing the user stored."""
        deadline = time.monotonic() + AUTH_ELECTION_RETRY_S
        while True:
            try:
                data = self._post_one(
                    endpoint,
                    "/v3/auth/authenticate",
                    {"name": self.user, "password": self._password or ""},
                    auth=False,
                )
                return str(data["token"])
            except EtcdOutcomeUnknown as exc:
                if "leader changed" not in exc.message or time.monotonic() >= deadline:
                    raise
            time.sleep(0.2)

    def reset_auth(self) -> None:
        """Forget the token (after auth was enabled or the password changed)."""
        self._token = None
        self._auth_checked = False

    # -- cluster -------------------------------------------------------------------
    def member_list(self, *, endpoint: str | None = None) -> list[MemberInfo]:
        """Without a token where etcd allows it: authenticating needs a quorum, and the
        list is wanted most when there is none."""
        try:
            data = self.call("/v3/cluster/member/list", {}, endpoint=endpoint, auth=False)
        except EtcdApiError as exc:
            if "user name is empty" not in exc.etcd_message and (
                "permission denied" not in exc.etcd_message
            ):
                raise
            data = self.call("/v3/cluster/member/list", {}, endpoint=endpoint)
        return [parse_member(m) for m in data.get("members", [])]

    def member_list_with_cluster(
        self, *, endpoint: str | None = None, anonymous: bool = False
    ) -> tuple[int, list[MemberInfo]]:
        """(cluster id, members): the id tells clusters apart when several answer.

        anonymous: skip authentication. etcd serves the member list without a token,
        and authenticating needs a quorum: without one it times out after ~7 s.
        """
        if anonymous:
            data = self._post_one(
                endpoint or self.endpoints[0], "/v3/cluster/member/list", {}, auth=False
            )
        else:
            data = self.call("/v3/cluster/member/list", {}, endpoint=endpoint)
        cluster_id = int(data.get("header", {}).get("cluster_id", 0))
        return cluster_id, [parse_member(m) for m in data.get("members", [])]

    # Not idempotent: use ops/membership.py, which reads the member list after an
    # unknown outcome instead of sending these again.
    def member_add(self, peer_urls: Iterable[str], *, learner: bool) -> MemberInfo:
        data = self.call(
            "/v3/cluster/member/add",
            {"peerURLs": list(peer_urls), "isLearner": learner},
            idempotent=False,
        )
        return parse_member(data["member"])

    def member_remove(self, member_id: int, *, endpoint: str | None = None) -> None:
        self.call(
            "/v3/cluster/member/remove", {"ID": str(member_id)}, endpoint=endpoint, idempotent=False
        )

    def member_promote(self, member_id: int, *, endpoint: str | None = None) -> None:
        self.call(
            "/v3/cluster/member/promote",
            {"ID": str(member_id)},
            endpoint=endpoint,
            idempotent=False,
        )

    # -- maintenance ---------------------------------------------------------------
    def status(self, endpoint: str) -> EndpointStatus:
        self._ensure_token(endpoint)  # authenticating (bcrypt) is not the member's latency
        started = time.monotonic()
        data = self.call("/v3/maintenance/status", {}, endpoint=endpoint)
        latency = (time.monotonic() - started) * 1000
        header = data.get("header", {})
        return EndpointStatus(
            endpoint=endpoint,
            member_id=int(header.get("member_id", 0)),
            leader=int(data.get("leader", 0)),
            version=str(data.get("version", "")),
            db_size=int(data.get("dbSize", 0)),
            raft_term=int(data.get("raftTerm", header.get("raft_term", 0))),
            raft_index=int(data.get("raftIndex", 0)),
            is_learner=bool(data.get("isLearner", False)),
            latency_ms=latency,
            db_size_in_use=int(data.get("dbSizeInUse", 0) or 0),
        )

    def defragment(self, endpoint: str, timeout: float) -> None:
        """Defragment one member's backend (etcd does it only on the member asked).

        Blocks that member's reads and writes while its bbolt file is rewritten, which
        takes about as long as copying the live data: hence its own read timeout. Not a
        raft request and content-preserving, so a second one is harmless; but etcd goes
        on after the client gave up (the server ignores the request's context), so after
        a timeout the caller waits for the member to serve again instead of re-sending.
        """
        self._ensure_token(endpoint)
        try:
            self._post_one(endpoint, "/v3/maintenance/defragment", {}, auth=True, timeout=timeout)
        except EtcdApiError as exc:
            if "invalid auth token" not in exc.etcd_message:
                raise
            self.reset_auth()  # refused before it started: safe to send again
            self._ensure_token(endpoint)
            self._post_one(endpoint, "/v3/maintenance/defragment", {}, auth=True, timeout=timeout)

    def serving(self, endpoint: str, timeout: float = 2.0) -> bool:
        """Whether this member answers a serializable read now (a defragment blocks them)."""
        try:
            self._post_one(
                endpoint,
                "/v3/kv/range",
                {"key": _b64("etcdsop-probe"), "serializable": True},
                auth=True,
                timeout=timeout,
            )
        except ClusterError:
            return False
        return True

    def alarms(self) -> list[Alarm]:
        """Every active alarm of the cluster (asked through raft on 3.4: needs a quorum)."""
        data = self.call("/v3/maintenance/alarm", {"action": "GET"})
        found = []
        for raw in data.get("alarms", []) or []:
            kind = raw.get("alarm", 0)
            name = _ALARM_NAMES.get(kind, str(kind)) if isinstance(kind, int) else str(kind)
            if name != "NONE":
                found.append(Alarm(int(raw.get("memberID", 0) or 0), name))
        return found

    def alarm_disarm(self, alarm: Alarm) -> None:
        """Deactivate one alarm; deactivating one that is no longer set changes nothing,
        so this is safe to send again."""
        body = {"action": "DEACTIVATE", "memberID": str(alarm.member_id), "alarm": alarm.alarm}
        self.call("/v3/maintenance/alarm", body)

    def revision(self) -> int:
        """The store's current revision (any range answer's header carries it)."""
        data = self.call("/v3/kv/range", {"key": _b64("etcdsop-probe")})
        return int(data.get("header", {}).get("revision", 0))

    def compact(self, revision: int, timeout: float) -> bool:
        """Compact the key history up to `revision`, physically (the freed pages exist
        once this returns, for a defragment to hand back). False when that revision was
        compacted already; compacting again to it changes nothing, so safe to re-send."""
        body = {"revision": str(revision), "physical": True}
        try:
            self.with_timeout(timeout).call("/v3/kv/compaction", body)
        except EtcdApiError as exc:
            if "required revision has been compacted" in exc.etcd_message:
                return False
            raise
        return True

    def health(self, endpoint: str) -> bool:
        """etcd's own /health verdict (not protected by RBAC): true only with a leader."""
        return self.health_detail(endpoint)[0]

    def health_detail(self, endpoint: str) -> tuple[bool, str]:
        """(/health's verdict, its reason): 3.5+ gives one, "RAFT NO LEADER" for a member
        without a leader; 3.4 gives none. (False, "") when it does not answer."""
        try:
            resp = self._pool.request("GET", endpoint + "/health")
            data = json.loads(resp.data)
        except (urllib3.exceptions.HTTPError, ValueError):
            return False, ""
        if not isinstance(data, dict):
            return False, ""
        healthy = resp.status == 200 and data.get("health") in ("true", True)
        return healthy, str(data.get("reason") or "")

    def metrics(self, endpoint: str) -> MemberMetrics:
        """This member's /metrics (no login, no RBAC): see etcdmetrics."""
        try:
            resp = self._pool.request("GET", endpoint + "/metrics")
        except urllib3.exceptions.HTTPError as exc:
            raise transport_error(endpoint, exc) from exc
        if resp.status != 200:
            raise ClusterError(f"{endpoint}: /metrics answered HTTP {resp.status}")
        return parse_metrics(resp.data.decode(errors="replace"))

    def versions(self, endpoint: str) -> tuple[str, str]:
        """(this member's etcd version, the cluster version) from /version (no RBAC).

        The cluster version is the minor all members run, as "3.4.0": it moves up only
        once every member runs the newer minor, and never down.
        """
        try:
            resp = self._pool.request("GET", endpoint + "/version")
            data = json.loads(resp.data)
        except urllib3.exceptions.HTTPError as exc:
            raise transport_error(endpoint, exc) from exc
        except ValueError as exc:
            raise ClusterError(f"{endpoint}: /version is not JSON") from exc
        if resp.status != 200 or not isinstance(data, dict):
            raise ClusterError(f"{endpoint}: /version answered HTTP {resp.status}")
        return str(data.get("etcdserver", "")), str(data.get("etcdcluster", ""))

    def peer_state(self, peer_url: str, timeout: float = 0.5) -> str:
        """Does etcd serve its peer port yet? "serving"; "starting" (nothing listens yet,
        or the port is open but unanswered: etcd opens it before it serves it); or
        "unreachable" (connecting timed out: a firewall between here and the port)."""
        try:
            self._pool.request(
                "GET", peer_url + "/version", timeout=urllib3.Timeout(connect=timeout, read=timeout)
            )
            return "serving"  # any HTTP answer
        except urllib3.exceptions.NewConnectionError:  # refused (a ConnectTimeoutError subclass)
            return "starting"
        except urllib3.exceptions.ConnectTimeoutError:
            return "unreachable"
        except urllib3.exceptions.HTTPError:  # TLS handshake or read timed out
            return "starting"

    def move_leader(self, target_id: int, *, leader_endpoint: str) -> None:
        """Hand leadership to target_id; etcd only accepts this on the current leader."""
        self.call(
            "/v3/maintenance/transfer-leadership",
            {"targetID": str(target_id)},
            endpoint=leader_endpoint,
        )

    def snapshot(self, endpoint: str, sink: BinaryIO, timeout: float = 300.0) -> int:
        """Stream a snapshot (newline-delimited JSON chunks of base64) into sink.

        A member that restarted since the token was issued (or caught up through a raft
        snapshot, which carries no tokens) refuses it before sending anything: log in
        again and ask once more, as call() does."""
        try:
            return self._snapshot(endpoint, sink, timeout)
        except _TokenRefused:
            if not self.user:
                raise
        self.reset_auth()
        return self._snapshot(endpoint, sink, timeout)

    def _snapshot(self, endpoint: str, sink: BinaryIO, timeout: float) -> int:
        self._ensure_token(endpoint)
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = self._token
        try:
            resp = self._pool.request(
                "POST",
                endpoint + "/v3/maintenance/snapshot",
                body=b"{}",
                headers=headers,
                preload_content=False,
                timeout=urllib3.Timeout(connect=3.0, read=timeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise transport_error(endpoint, exc) from exc
        written = 0
        buffer = b""
        try:
            for chunk in resp.stream(1 << 16):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    written += self._snapshot_line(endpoint, line, sink)
            written += self._snapshot_line(endpoint, buffer, sink)
        except EtcdApiError as exc:
            if written == 0 and "invalid auth token" in exc.etcd_message:
                raise _TokenRefused(endpoint, exc.code, exc.etcd_message) from exc
            raise
        finally:
            resp.release_conn()
        return written

    @staticmethod
    def _snapshot_line(endpoint: str, line: bytes, sink: BinaryIO) -> int:
        if not line.strip():
            return 0
        data = json.loads(line)
        if "error" in data:
            err = data["error"]
            raise EtcdApiError(
                endpoint,
                int(err.get("grpc_code", err.get("code", 0)) or 0),
                str(err.get("message", err)),
            )
        blob = _unb64(data.get("result", {}).get("blob", ""))
        sink.write(blob)
        return len(blob)

    # -- auth ----------------------------------------------------------------------
    def auth_enabled(self, endpoint: str | None = None) -> bool:
        """3.4 has no AuthStatus: an unauthenticated linearizable read tells us
        (etcd-rules.md); asked of the first endpoint that serves it (a voter)."""
        errors: list[str] = []
        for target in [endpoint] if endpoint else self.endpoints:
            try:
                self._post_one(
                    target, "/v3/kv/range", {"key": _b64("etcdsop-auth-probe")}, auth=False
                )
            except EtcdApiError as exc:
                if "user name is empty" in exc.etcd_message or (
                    "permission denied" in exc.etcd_message
                ):
                    return True
                if not (exc.ask_another or exc.no_leader):  # a read: any voter will do
                    raise
                errors.append(exc.message)
                self._demote(target)
                continue
            except (EtcdUnreachable, EtcdOutcomeUnknown) as exc:
                errors.append(exc.message)
                self._demote(target)
                continue
            return False
        raise EtcdUnreachable("; ".join(errors) or "no etcd endpoint answered")

    def role_add(self, name: str) -> bool:
        """Add a role; False when it already exists."""
        return self._add_if_missing("/v3/auth/role/add", {"name": name}, "role name already exists")

    def user_add(self, name: str, password: str) -> bool:
        return self._add_if_missing(
            "/v3/auth/user/add", {"name": name, "password": password}, "user name already exists"
        )

    def user_change_password(self, name: str, password: str) -> None:
        self.call("/v3/auth/user/changepw", {"name": name, "password": password})

    def user_grant_role(self, user: str, role: str) -> None:
        self.call("/v3/auth/user/grant", {"user": user, "role": role})

    def user_roles(self, user: str) -> list[str]:
        data = self.call("/v3/auth/user/get", {"name": user})
        return list(data.get("roles", []))

    def user_get(self, user: str) -> list[str] | None:
        """The user's roles, or None when there is no such user."""
        try:
            return self.user_roles(user)
        except EtcdApiError as exc:
            if "user name not found" in exc.etcd_message:
                return None
            raise

    def role_get(self, role: str) -> list[Permission] | None:
        """The role's permissions, or None when there is no such role."""
        try:
            data = self.call("/v3/auth/role/get", {"role": role})
        except EtcdApiError as exc:
            if "role name not found" in exc.etcd_message:
                return None
            raise
        return [
            Permission(
                # The gateway leaves out enum defaults: no permType means READ (0).
                perm_type=_PERM_NAMES.get(p.get("permType", 0), str(p.get("permType"))),
                key=_unb64(p.get("key", "")),
                range_end=_unb64(p.get("range_end", "")),
            )
            for p in data.get("perm", [])
        ]

    def role_grant_permission(self, role: str, perm: Permission) -> None:
        body = {
            "name": role,
            "perm": {
                "permType": perm.perm_type,
                "key": _b64(perm.key),
                "range_end": _b64(perm.range_end),
            },
        }
        self.call("/v3/auth/role/grant", body)

    def role_revoke_permission(self, role: str, perm: Permission) -> None:
        body = {"role": role, "key": _b64(perm.key), "range_end": _b64(perm.range_end)}
        self.call("/v3/auth/role/revoke", body)

    def check_password(self, user: str, password: str, *, endpoint: str | None = None) -> bool:
        """Whether etcd accepts user/password (without keeping the token)."""
        errors: list[str] = []
        for target in [endpoint] if endpoint else self.endpoints:
            try:
                self._post_one(
                    target,
                    "/v3/auth/authenticate",
                    {"name": user, "password": password},
                    auth=False,
                )
            except (EtcdUnreachable, EtcdOutcomeUnknown) as exc:
                errors.append(exc.message)
                self._demote(target)
                continue
            except EtcdApiError as exc:
                if "authentication failed" in exc.etcd_message:
                    return False
                if not (exc.ask_another or exc.no_leader):  # a read: any voter will do
                    raise
                errors.append(exc.message)
                self._demote(target)
                continue
            return True
        raise EtcdUnreachable("; ".join(errors) or "no etcd endpoint answered")

    def auth_enable(self) -> None:
        self.call("/v3/auth/enable", {})
        self.reset_auth()

    def _add_if_missing(self, path: str, body: dict[str, Any], exists_message: str) -> bool:
        try:
            self.call(path, body)
        except EtcdApiError as exc:
            if exists_message in exc.etcd_message:
                return False
            raise
        return True

    # -- kv ------------------------------------------------------------------------
    def put(self, key: str, value: str | bytes) -> None:
        self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def get(self, key: str) -> bytes | None:
        data = self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs", [])
        return _unb64(kvs[0].get("value", "")) if kvs else None

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under prefix (idempotent); how many were deleted."""
        data = self.call(
            "/v3/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        )
        return int(data.get("deleted", 0))

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        data = self.call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        )
        return {
            _unb64(kv["key"]).decode(): _unb64(kv.get("value", "")) for kv in data.get("kvs", [])
        }


def transport_error(endpoint: str, exc: urllib3.exceptions.HTTPError) -> ClusterError:
    """Sort a urllib3 failure: never sent (safe to send elsewhere) or outcome unknown."""
    if isinstance(exc, urllib3.exceptions.SSLError):
        # A certificate that does not verify ends the handshake before anything is
        # sent; any other TLS error may come while the answer is read (sent, then).
        if _caused_by(exc, ssl.SSLCertVerificationError):
            return EtcdTlsError(f"{endpoint}: TLS handshake failed ({_short(exc)})")
        return EtcdOutcomeUnknown(f"{endpoint}: TLS error ({_short(exc)})")
    if isinstance(
        exc, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    ):
        return EtcdUnreachable(f"{endpoint}: no answer ({_short(exc)})")
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return EtcdOutcomeUnknown(f"{endpoint}: no answer in time ({_short(exc)})")
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return EtcdOutcomeUnknown(f"{endpoint}: connection lost ({_short(exc)})")
    return EtcdUnreachable(f"{endpoint}: no answer ({_short(exc)})")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether kind is anywhere in exc's chain (cause, context, or wrapped in args)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            return True
        todo += [item.__cause__, item.__context__, *item.args]
    return False


# urllib3 puts its objects' reprs in front of what happened; the endpoint is named already.
_URLLIB3_NOISE = re.compile(
    r"<urllib3\.[\w.]+ object at 0x[0-9a-f]+>: |HTTPS?Connection(?:Pool)?\([^)]*\): "
)


def _short(exc: Exception) -> str:
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None:
        text = str(reason)
    text = _URLLIB3_NOISE.sub("", text)
    return text if len(text) < 160 else text[:157] + "..."
