"""Restart Patroni under maintenance mode where its etcd hosts changed.

Why a restart: Patroni 3.0.2 (Debian bookworm) re-reads only `etcd3.username` and
`etcd3.password` on SIGHUP (`AbstractEtcdClientWithFailover.reload_config`). Its hosts
are read once, at start (`get_etcd_client`): when every member it remembers fails it
falls back to those startup hosts (`_load_machines_cache`), and it refreshes its member
list only on a failed request or every 10 x ttl (300 s). Replace every etcd member
inside that window and it loses the DCS and demotes its primary ("demoting self because
DCS is not accessible"). A restart reads the new hosts.

Why maintenance mode: paused, a stopping Patroni leaves PostgreSQL running and keeps
its leader key (`Ha.shutdown`), a DCS outage never demotes (`Ha._handle_dcs_error`),
and only a node running as primary may take the leader key (`Ha.is_healthiest_node`).
So the restart moves no role, provided systemd stops only the Patroni process
(`KillMode=process`, as Pigsty's and Debian's units have it).

Whose pause: only a pause etcdsop took is ever resumed by it. It says so in etcd
(`/etcdsop/pause/<cluster>`, under the prefix no PostgreSQL user may read) before it
pauses, and deletes that key once it resumed: a run stopped in between (Ctrl-C, a lost
SSH session to the admin node), or whose restarted Patroni did not come back, leaves the
cluster paused and the key set; the next run restarts what is left under that pause and
ends it, once a running Patroni of the cluster holds the leader key.

Order: replicas first, the leader last, each back (serving, through the DCS, paused,
same role, same postmaster) before the next. Resume only when every restarted Patroni
is back: resuming while the primary's Patroni is down would let a replica take over
while the old primary still runs.
"""

from __future__ import annotations

import base64
import calendar
import ipaddress
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdClient
from etcdsop.ops.common import Context
from etcdsop.ops.outcomes import HostOutcome, ReloadResult
from etcdsop.remote import RemoteHost, run_parallel

# SIGHUP applies these two (reload_config); any other etcd3 key needs a restart.
RELOADABLE = frozenset({"username", "password"})
LEADER_ROLES = frozenset({"master", "primary", "standby_leader"})
# Only the Patroni process may be signalled: control-group/mixed would kill PostgreSQL
# too, and none would leave the old Patroni running beside the new one.
SAFE_KILL_MODES = frozenset({"process"})
_STAMP_RE = re.compile(r"\.(\d{8}T\d{6}Z)\.bak$")  # filebackup.backup_path's stamp


# -- pure decisions -----------------------------------------------------------------------
def _hosts(value: Any) -> frozenset[str]:
    """etcd3.hosts as a set: 'a:2379,b:2379' or a list; Patroni shuffles them anyway."""
    items = value.split(",") if isinstance(value, str) else value or []
    return frozenset(str(h).strip() for h in items if str(h).strip())


def etcd3_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """The etcd3 keys that differ in a way SIGHUP does not apply (hosts as a set)."""
    before, after = dict(old or {}), dict(new or {})
    changed = []
    for key in sorted((set(before) | set(after)) - RELOADABLE):
        if key == "hosts":
            if _hosts(before.get(key)) != _hosts(after.get(key)):
                changed.append(key)
        elif before.get(key) != after.get(key):
            changed.append(key)
    return changed


def etcd3_of(content: bytes | None) -> dict[str, Any] | None:
    """The etcd3 section of a patroni.yml, None when it cannot be read."""
    try:
        doc = yaml.safe_load(content) if content else None
    except yaml.YAMLError:
        return None
    section = doc.get("etcd3") if isinstance(doc, dict) else None
    return dict(section) if isinstance(section, dict) else None


def backup_stamp(path: str) -> int | None:
    """When the run that made <conf>.<stamp>.bak replaced that version (epoch seconds)."""
    match = _STAMP_RE.search(path)
    if match is None:
        return None
    moment = time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")
    return calendar.timegm(moment)


def loaded_version(started: int, mtimes: Mapping[str, int], conf: str) -> str | None:
    """Which file Patroni read at its start (epoch seconds): the config when it was not
    rewritten since; else the backup that was the config then (written before the start,
    mtime kept by cp -p, and replaced after it, per its stamp); None when nothing tells
    (the file was rewritten by something that keeps no backup).

    A write in the very second of the start counts as read: a restart follows its write.
    """
    if mtimes.get(conf, started + 1) <= started:
        return conf
    then = []
    for path, mtime in mtimes.items():
        replaced = backup_stamp(path) if path != conf else None
        if replaced is not None and mtime <= started < replaced:
            then.append((mtime, path))
    return max(then)[1] if then else None


def restart_reason(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    running: Mapping[str, Any] | None = None,
    running_from: str = "",
) -> str | None:
    """Why this Patroni needs a restart, or None when a reload (or nothing) is enough.

    old/new: the etcd3 section before/after this run's edit; running: the section the
    process read at its start when that is an older file (running_from names it).
    """
    changed = etcd3_changes(old, new)
    if changed:
        return f"etcd3 {', '.join(changed)} changed (SIGHUP re-reads only the credentials)"
    if running is not None:
        stale = etcd3_changes(running, new)
        if stale:
            return (
                f"Patroni still runs the etcd3 {', '.join(stale)} of {running_from} "
                "(written since, never restarted)"
            )
    return None


@dataclass(frozen=True)
class RestStatus:
    """GET /patroni of one Patroni, on its own host's clock."""

    error: str = ""
    state: str = ""
    role: str = ""
    paused: bool = False
    postmaster: str = ""  # postmaster_start_time: changes only when PostgreSQL restarts
    timeline: int = 0
    dcs_last_seen: float | None = None  # None: a Patroni too old to say (before 2.1)
    unlocked: bool = False
    now: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def leader(self) -> bool:
        return self.role in LEADER_ROLES


def parse_status(text: str) -> RestStatus:
    try:
        doc = json.loads(text)
    except ValueError:
        return RestStatus(error=f"not JSON: {text.strip()[:200]!r}")
    if not isinstance(doc, dict):
        return RestStatus(error="not a JSON object")
    now = float(doc.get("now") or 0)
    seen = doc.get("dcs_last_seen")
    if doc.get("error"):
        return RestStatus(error=str(doc["error"]), now=now)
    return RestStatus(
        state=str(doc.get("state") or ""),
        role=str(doc.get("role") or ""),
        paused=bool(doc.get("pause")),
        postmaster=str(doc.get("postmaster_start_time") or ""),
        timeline=int(doc.get("timeline") or 0),
        dcs_last_seen=None if seen is None else float(seen or 0),
        unlocked=bool(doc.get("cluster_unlocked")),
        now=now,
    )


def restart_order(roles: Mapping[str, RestStatus]) -> tuple[list[str], dict[str, str]]:
    """Replicas first (by IP), the leader(s) last; a host whose role is unknown is
    refused (without a role there is no safe order)."""
    refused = {ip: s.error or "no role" for ip, s in roles.items() if not s.ok or not s.role}
    known = [ip for ip in roles if ip not in refused]
    ordered = sorted(known, key=lambda ip: (roles[ip].leader, _ip_key(ip)))
    return ordered, refused


def _ip_key(ip: str) -> tuple[int, int, str]:
    try:
        return (0, int(ipaddress.ip_address(ip)), "")
    except ValueError:
        return (1, 0, ip)  # a host name


def check_back(before: RestStatus, after: RestStatus, since: float) -> tuple[str, str]:
    """("ok"|"wait"|"broken", why) for a restarted Patroni, from its REST API.

    Back means: it answers, has loaded the cluster from etcd since its restart (so it
    reads the new hosts), sees the pause, PostgreSQL is in the same state and role with
    the same postmaster, and a leader holds its lock again.
    """
    if not after.ok:
        return "wait", f"REST API: {after.error}"
    if after.role and after.role != before.role:
        return "broken", f"PostgreSQL role changed from {before.role} to {after.role}"
    if after.postmaster and before.postmaster and after.postmaster != before.postmaster:
        return "broken", f"PostgreSQL restarted (postmaster started {after.postmaster})"
    if after.dcs_last_seen is not None and after.dcs_last_seen < since:
        return "wait", "has not read the cluster from etcd since its restart"
    if after.state != before.state:
        return "wait", f"PostgreSQL state {after.state or 'unknown'} (was {before.state})"
    if not after.paused:
        return "wait", "does not see the maintenance mode"
    if before.leader and after.unlocked:
        return "wait", "the leader key is not held yet"
    return "ok", f"back: {after.role}, running, sees the pause, reads etcd"


def rest_url(content: bytes | None) -> str:
    """Patroni's local GET /patroni from restapi.listen (any address -> loopback)."""
    try:
        doc = yaml.safe_load(content) if content else None
    except yaml.YAMLError:
        doc = None
    api = doc.get("restapi") if isinstance(doc, dict) else None
    api = api if isinstance(api, dict) else {}
    host, _, port = str(api.get("listen") or ":8008").rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if api.get("certfile") else "http"
    return f"{scheme}://{host}:{port if port.isdigit() else '8008'}/patroni"


# -- on the hosts ---------------------------------------------------------------------------
# The host's own clock comes back with the answer ("now"), to compare with dcs_last_seen.
# An unverified TLS context: a loopback read of non-secret status (Patroni's server cert
# names the host, not 127.0.0.1); nothing is sent.
_REST = r"""
import json, ssl, sys, time, urllib.request
try:
    ctx = ssl._create_unverified_context()
    with urllib.request.urlopen(sys.argv[1], timeout=3, context=ctx) as r:
        doc = json.loads(r.read().decode())
except Exception as e:
    doc = {"error": "%s: %s" % (type(e).__name__, e)}
doc["now"] = time.time()
print(json.dumps(doc))
"""


@dataclass
class PatroniNode:
    """One running Patroni that reload touched or checked (its cluster's pause needs all)."""

    cluster: str
    ip: str
    host: RemoteHost
    conf: str
    url: str  # GET /patroni on the host itself
    kill_mode: str
    reason: str | None  # why it needs a restart; None: a reload was enough
    outcome: HostOutcome


def read_status(node: PatroniNode) -> RestStatus:
    out = node.host.run(["python3", "-c", _REST, node.url], check=False, timeout=20)
    if out.rc != 0:
        return RestStatus(error=(out.stderr.strip() or f"python3 exit {out.rc}")[-300:])
    return parse_status(out.stdout)


def _wait(
    probe: Callable[[], tuple[str, str]],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, str]:
    """Poll probe until "ok" or "broken", or the deadline ("wait" with the last reason)."""
    deadline = clock() + timeout
    while True:
        verdict = probe()
        if verdict[0] != "wait" or clock() >= deadline:
            return verdict
        sleep(0.5)


def _patronictl(node: PatroniNode, verb: str, timeout: float) -> tuple[bool, str]:
    """patronictl as root with the host's own config (its etcd credentials stay in the
    file, never on a command line). pause/resume exit 0 even when they failed, so the
    answer's "Success" line decides."""
    argv = ["patronictl", "-c", node.conf, verb, "--wait"]
    out = node.host.run(argv, check=False, timeout=timeout)
    text = (out.stdout + out.stderr).strip()
    done = "paused" if verb == "pause" else "resumed"
    return out.rc == 0 and f"Success: cluster management is {done}" in out.stdout, text


def _sees(status: RestStatus, paused: bool) -> bool:
    return status.ok and status.paused == paused


def _command(node: PatroniNode, verb: str) -> str:
    return f"patronictl -c {node.conf} {verb} --wait"


class PauseMarks:
    """The clusters an etcdsop run paused and has not resumed yet, kept in etcd (so a
    re-run from this or another admin node, under the same lock, finds them)."""

    PREFIX = "/etcdsop/pause/"

    def __init__(self, client: EtcdClient | None) -> None:
        self.client = client  # None: nothing is recorded (dry run, unit tests)

    def _key(self, cluster: str) -> str:
        return base64.b64encode((self.PREFIX + cluster).encode()).decode()

    def get(self, cluster: str) -> bool:
        return self.client is not None and self.client.get(self.PREFIX + cluster) is not None

    def put(self, cluster: str) -> None:
        if self.client is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.client.put(self.PREFIX + cluster, f"paused by etcdsop reload at {stamp}")

    def drop(self, cluster: str) -> None:
        if self.client is not None:
            self.client.call("/v3/kv/deleterange", {"key": self._key(cluster)})


class ClusterRestart:
    """Pause one PostgreSQL cluster, restart its stale Patronis one by one, resume."""

    def __init__(
        self,
        ctx: Context,
        name: str,
        nodes: Sequence[PatroniNode],
        marks: PauseMarks | None = None,
    ) -> None:
        self.ctx, self.name, self.nodes = ctx, name, list(nodes)
        self.report = ctx.report
        self.timeout = ctx.options.wait_timeout
        self.paused_by_us = False
        self.marks = marks or PauseMarks(None)
        self.inherited = False  # the pause is an interrupted earlier run's

    def _fail(self, node: PatroniNode, message: str) -> None:
        node.outcome.status = "failed"
        node.outcome.message += f"; {message}"
        self.report.host(node.ip, f"patroni: {message}", "failed")

    def run(self, result: ReloadResult) -> None:
        todo = [n for n in self.nodes if n.reason]
        statuses = run_parallel(
            self.nodes, read_status, forks=self.ctx.options.forks, key=lambda n: n.ip
        )
        status: dict[str, RestStatus] = {
            ip: v if isinstance(v, RestStatus) else RestStatus(error=str(v))
            for ip, v in statuses.items()
        }
        paused_now = any(s.paused for s in status.values())
        self.inherited = self.marks.get(self.name)
        if self.inherited and not paused_now:
            self.inherited = False  # resumed since by someone: nothing of ours is left
            if not self.ctx.options.dry_run:
                self.marks.drop(self.name)
        order, refused = restart_order({n.ip: status[n.ip] for n in todo})
        for node in todo:
            if node.ip in refused:
                self._fail(
                    node,
                    f"not restarted: its REST API ({node.url}) gave no role ({refused[node.ip]}), "
                    "so no safe order",
                )
            elif node.kill_mode not in SAFE_KILL_MODES:
                order.remove(node.ip)
                self._fail(
                    node,
                    f"not restarted: patroni.service has KillMode={node.kill_mode or '?'}, so "
                    "stopping it would stop PostgreSQL too (Pigsty and Debian use process)",
                )
        if not order and not self.inherited:
            return
        by_ip = {n.ip: n for n in self.nodes}
        roles = ", ".join(f"{ip} ({status[ip].role})" for ip in order)
        if self.ctx.options.dry_run:
            for ip in order:
                node = by_ip[ip]
                node.outcome.status = "changed"
                node.outcome.message += f"; would restart Patroni under pause: {node.reason}"
            if self.inherited:
                self.report.info(f"{self.name}: would end the pause an interrupted run left")
            if order:
                self.report.info(
                    f"{self.name}: would pause it (patronictl pause), restart Patroni on "
                    f"{roles} one at a time, then resume"
                )
            result.patroni_restarted += order
            return
        leaders_first = sorted(status, key=lambda ip: not status[ip].leader)
        fallback = by_ip[order[-1]] if order else self.nodes[0]
        runner = next((by_ip[ip] for ip in leaders_first if status[ip].ok), fallback)
        self.paused_by_us = False  # only our own pause is ever resumed by us
        current: PatroniNode | None = None  # restarted but not (yet) back
        try:
            if self.inherited:
                self.paused_by_us = True
                self.report.warn(
                    f"{self.name} is still in the maintenance mode an earlier etcdsop run took "
                    "(stopped or failed before resuming): ending it once its leader is back"
                )
                self._wait_all_paused(True)
            elif paused_now:
                self.report.warn(
                    f"{self.name} is already in maintenance mode: restarting under it, left paused"
                )
            else:
                self._pause(runner)
            if order:
                self.report.info(f"{self.name}: paused; restarting Patroni on {roles}")
            for ip in order:
                current = by_ip[ip]
                self._restart(current, status[ip])
                current = None
                result.patroni_restarted.append(ip)
        except ClusterError as exc:
            failed = current or runner
            self._fail(failed, exc.message)
            for ip in order:
                if ip not in result.patroni_restarted and by_ip[ip] is not failed:
                    self._fail(by_ip[ip], "not restarted (an earlier step failed): re-run reload")
        finally:
            if self.paused_by_us:
                self._finish(runner, current)

    def _pause(self, runner: PatroniNode) -> None:
        """Pause the cluster. patronictl exits 0 even when it failed ("Failed: ... 401"):
        only its "Success" line (or its wait running out after the pause was set) makes
        the pause ours; "already paused" is someone else's
        (never resumed by us); any other answer is an error with no pause of ours."""
        self.marks.put(self.name)  # first: a run stopped after the pause knows it is ours
        try:
            ok, text = _patronictl(runner, "pause", self.timeout + 30)
        except ClusterError:
            # The answer was lost: ours if the cluster is paused now (it was not before).
            self.paused_by_us = any(_sees(read_status(n), True) for n in self.nodes)
            if not self.paused_by_us:
                self.marks.drop(self.name)
            raise
        # "...didn't recognized pause state after N seconds": our PATCH was accepted, only
        # patronictl's own wait ran out (ours below decides).
        if ok or "recognized pause state" in text:
            self.paused_by_us = True
        elif "already paused" not in text:
            self.marks.drop(self.name)
            command = _command(runner, "pause")
            raise ClusterError(f"`{command}` failed on {runner.ip}: {text[-300:]}")
        else:
            self.marks.drop(self.name)
            self.report.warn(f"{self.name} was paused meanwhile by someone else: left paused")
        self._wait_all_paused(True)

    def _wait_all_paused(self, paused: bool) -> None:
        """Every running Patroni of the cluster must have seen the flag (its HA loop): a
        replica that missed the pause could still take an expiring leader key."""
        pending = list(self.nodes)

        def probe() -> tuple[str, str]:
            pending[:] = [n for n in pending if not _sees(read_status(n), paused)]
            return ("wait", "") if pending else ("ok", "")

        if _wait(probe, self.timeout)[0] != "ok":
            state = "paused" if paused else "resumed"
            names = ", ".join(n.ip for n in pending)
            raise ClusterError(f"Patroni on {names} did not see the cluster {state} in time")

    def _restart(self, node: PatroniNode, before: RestStatus) -> None:
        self.report.host(node.ip, f"restarting Patroni ({before.role}) under pause", "start")
        # Before the stop, on the host's clock: the new process's dcs_last_seen is 0 until
        # its first successful read of the cluster from etcd.
        since = before.now
        node.host.run(["systemctl", "restart", "patroni"], timeout=self.timeout + 30)
        verdict, why = _wait(lambda: check_back(before, read_status(node), since), self.timeout)
        if verdict != "ok":
            late = f"not back after {self.timeout:.0f}s" if verdict == "wait" else "broken"
            raise ClusterError(
                f"Patroni restarted under pause, {late}: {why}",
                details=node.host.journal_tail("patroni", 15),
            )
        node.outcome.status = "changed"
        node.outcome.message += f"; restarted under pause ({node.reason})"
        self.report.host(node.ip, f"Patroni back: {before.role}, same postmaster", "changed")

    def _finish(self, runner: PatroniNode, current: PatroniNode | None) -> None:
        """Resume only when every restarted Patroni is back; otherwise stay paused, loudly."""
        if self.ctx.aborted:
            # The lock is lost: another etcdsop may be restarting Patroni under this very
            # pause now, and a resume by hand could let it fail over mid-way.
            self.report.warn(
                f"cluster {self.name} LEFT IN MAINTENANCE MODE (no automatic failover): the "
                "cluster lock was lost mid-way. Do not resume it by hand: run the same "
                "command again once etcd answers, it finishes the restarts and resumes it"
            )
            return
        if current is not None:
            # patronictl works from any host of the cluster: name one whose Patroni runs.
            where = next((n for n in self.nodes if n is not current), current)
            message = (
                f"cluster {self.name} LEFT IN MAINTENANCE MODE (no automatic failover): Patroni "
                f"on {current.ip} is not back, and resuming now could promote a replica while "
                f"the primary still runs. Fix Patroni there (journalctl -u patroni), then run "
                f"on {where.ip}: {_command(where, 'resume')}"
            )
            self.report.warn(message)
            self._fail(current, message)
            return
        resume = _command(runner, "resume")
        if self.inherited and not any(
            s.ok and s.leader and not s.unlocked for s in map(read_status, self.nodes)
        ):
            # An earlier run's pause: its restarts may have left the leader's Patroni down.
            message = (
                f"cluster {self.name} LEFT IN MAINTENANCE MODE (no automatic failover): an "
                "earlier etcdsop run paused it and no running Patroni of it holds the "
                "leader key, so resuming could promote a replica while the primary still "
                f"runs. Fix the leader's Patroni (journalctl -u patroni), then run: {resume}"
            )
            self.report.warn(message)
            self._fail(runner, message)
            return
        try:
            ok, text = _patronictl(runner, "resume", self.timeout + 30)
            if not ok:
                raise ClusterError(text[-300:])
            self.marks.drop(self.name)
            self._wait_all_paused(False)
            self.report.info(f"{self.name}: resumed")
        except ClusterError as exc:
            message = (
                f"cluster {self.name} is STILL IN MAINTENANCE MODE (no automatic failover): "
                f"resume failed ({exc.message}); run on {runner.ip}: {resume}"
            )
            self.report.warn(message)
            self._fail(runner, message)


def restart_clusters(
    ctx: Context,
    nodes: Sequence[PatroniNode],
    result: ReloadResult,
    marks: PauseMarks | None = None,
) -> None:
    """One cluster at a time (each is paused for its own restarts only); a cluster an
    interrupted run left paused too, to end that pause."""
    clusters: dict[str, list[PatroniNode]] = {}
    for node in nodes:
        clusters.setdefault(node.cluster, []).append(node)
    for name, members in clusters.items():
        if any(n.reason for n in members) or (marks is not None and marks.get(name)):
            ClusterRestart(ctx, name, members, marks).run(result)
