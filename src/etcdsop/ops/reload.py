"""`etcdsop reload`: point every etcd client at the live membership (the SOP's 重载配置).

Targets: etcd (etcd.conf + the root password), etcdctl (etcdctl.sh), patroni and
vip (clients/reload.py; Patroni restarts under maintenance mode in clients/restart.py).
Endpoints are the live VOTERS (learners serve no clients), cross-checked with the
inventory. Only files whose content differs are written, each after a backup beside
it; a failed host never stops the others.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from etcdsop.errors import ClusterError, InputError
from etcdsop.etcd import EtcdApiError, EtcdClient
from etcdsop.events import Status as ReportStatus
from etcdsop.model import Inventory, Member
from etcdsop.ops import rbac
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.restart import leader_last, rolling_restart
from etcdsop.ops.stages import initial_cluster, url_sort_key
from etcdsop.plan import find_live
from etcdsop.remote import RemoteHost
from etcdsop.render import ETCD_CONF, ETCD_PASS, PROFILE, NodeFile, render_etcd_conf, render_profile

TARGETS = ("etcd", "etcdctl", "patroni", "vip")
Status = Literal["changed", "unchanged", "failed", "skipped"]


# -- results --------------------------------------------------------------------------
@dataclass
class HostOutcome:
    target: str
    host: str
    status: Status
    message: str
    files: list[str] = field(default_factory=list)  # paths written (or to write)
    backups: list[str] = field(default_factory=list)
    diff: str = ""  # unified diffs, secrets masked

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "host": self.host,
            "status": self.status,
            "message": self.message,
            "files": self.files,
            "backups": self.backups,
            "diff": self.diff,
        }


@dataclass
class ReloadResult:
    targets: tuple[str, ...]
    dry_run: bool
    endpoints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcomes: list[HostOutcome] = field(default_factory=list)
    root_password: str = "not checked"
    rbac: list[rbac.AccountResult] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    patroni_restarted: list[str] = field(default_factory=list)  # in restart order
    # pg cluster -> seconds from its etcd password change until every client had it
    password_windows: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def changed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes if o.status == "changed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "dry_run": self.dry_run,
            "endpoints": self.endpoints,
            "notes": self.notes,
            "root_password": self.root_password,
            "rbac": [r.to_json() for r in self.rbac],
            "hosts": [o.to_json() for o in self.outcomes],
            "restarted": self.restarted,
            "patroni_restarted": self.patroni_restarted,
            "password_windows": self.password_windows,
            "failed": len(self.failed),
        }


def parse_targets(values: Sequence[str]) -> tuple[str, ...]:
    """`--target etcd --target patroni,vip` or `all`; canonical order, no duplicates."""
    wanted: set[str] = set()
    for value in values:
        for word in (w.strip().lower() for w in value.split(",")):
            if word == "all":
                wanted.update(TARGETS)
            elif word in TARGETS:
                wanted.add(word)
            elif word:
                raise InputError(
                    f"unknown reload target {word!r}: choose from {', '.join(TARGETS)} or all"
                )
    if not wanted:
        raise InputError(f"no reload target: choose from {', '.join(TARGETS)} or all")
    return tuple(t for t in TARGETS if t in wanted)


# -- the live view and the root password ------------------------------------------------
def voter_urls(view: ClusterView) -> list[str]:
    """Client URLs of the started voters, in the inventory's order (by IP)."""
    return sorted(view.voter_endpoints(), key=url_sort_key)


def cross_check(inventory: Inventory, view: ClusterView) -> list[str]:
    """Every way the live membership and the inventory's etcd group disagree."""
    notes = []
    for member in inventory.members:
        live = find_live(member, view.members)
        if live is None:
            notes.append(
                f"inventory member {member.name} ({member.ip}) is not in the live cluster: left "
                f"out of every endpoint list (add it: etcdsop add {member.ip})"
            )
        elif not live.started:
            notes.append(
                f"member {member.name} ({member.ip}) is announced but not started: left out"
            )
        elif live.is_learner:
            notes.append(
                f"member {member.name} ({member.ip}) is a learner: left out of client endpoints "
                f"until promoted (etcdsop promote {member.ip})"
            )
    inventory_peers = {m.peer_url for m in inventory.members}
    for live in view.members:
        if not inventory_peers & set(live.peer_urls):
            kind = "learner" if live.is_learner else "voter"
            where = ", ".join(live.client_urls or live.peer_urls)
            used = "" if live.is_learner or not live.started else ": clients still use it"
            notes.append(
                f"live {kind} {live.name or live.hex_id} ({where}) is not in the inventory's "
                f"etcd group{used} (remove it with etcdsop rm, or add it to the inventory)"
            )
    return notes


def live_root(
    ctx: Context,
    result: ReloadResult,
    *,
    rotate: bool,
    check: Callable[[EtcdClient], None] | None = None,
) -> ClusterView:
    """The live view, converging the root password first when the inventory's is refused.

    The old password comes from /etc/etcd/etcd.pass (any member): it is changed through
    the API first, the files after, so an interrupted run can always be re-run. `check`
    gets a working root client before anything changes (it may refuse the run).
    """
    view = ctx.probe()
    if not view.live:
        return view
    client = ctx.client(view.voter_endpoints() or None)
    try:
        accepted = client.check_password("root", ctx.inventory.root_password)
    except EtcdApiError as exc:
        if "authentication is not enabled" not in exc.etcd_message:
            raise
        result.root_password = "auth not enabled"
        if check is not None:
            check(ctx.voter_client(view))
        return view
    if accepted:
        result.root_password = "unchanged"
        if check is not None:
            check(ctx.voter_client(view))
        return view
    if not rotate:
        raise ClusterError(
            "etcd refuses the inventory's etcd_root_password: `etcdsop reload --target etcd` "
            "changes the live root password (read from /etc/etcd/etcd.pass) to it"
        )
    old = _live_password(ctx)
    if check is not None:
        check(_client_with(ctx, old))
    if ctx.options.dry_run:
        result.root_password = "would change"
        ctx.report.info("root password: would be changed to the inventory's through the API")
        return view
    _client_with(ctx, old).user_change_password("root", ctx.inventory.root_password)
    result.root_password = "changed"
    ctx.report.info("root password changed through the API to the inventory's")
    return view


def _client_with(ctx: Context, password: str) -> EtcdClient:
    client = ctx.voter_client()
    return EtcdClient(client.endpoints, client.tls, user="root", password=password)


def _live_password(ctx: Context) -> str:
    members = list(ctx.inventory.members)
    found = ctx.parallel(
        members, lambda m: ctx.host(m).run(["cat", ETCD_PASS], check=False, timeout=20)
    )
    candidates = []
    for member in members:
        value = found[member.ip]
        text = getattr(value, "stdout", "") if getattr(value, "rc", 1) == 0 else ""
        if text and text not in candidates:
            candidates.append(text)
    probe = ctx.voter_client()
    for password in candidates:
        if probe.check_password("root", password):
            return password
    raise ClusterError(
        "etcd refuses the inventory's etcd_root_password and every /etc/etcd/etcd.pass: "
        "put the live root password in the inventory"
    )


# -- etcd members: etcd.conf, etcd.pass, etcdctl.sh ------------------------------------
# $1 = etcd.conf, $2 = etcd.pass (checksum only), $3 = etcdctl.sh
_MEMBER_FACTS = r"""
for p in "$1" "$3"; do
  if [ -f "$p" ]; then echo "file $p $(base64 -w0 "$p")"; else echo "missing $p"; fi
done
[ -f "$2" ] && echo "sha $2 $(sha256sum "$2" | cut -d' ' -f1)"
pid=$(systemctl show -p MainPID --value etcd 2>/dev/null)
if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -f "$1" ]; then
  echo "ages $(ps -o etimes= -p "$pid" | tr -d ' ') $(( $(date +%s) - $(stat -c %Y "$1") ))"
fi
exit 0
"""


@dataclass(frozen=True)
class MemberFacts:
    files: dict[str, bytes]
    secret_sha: dict[str, str]
    process_age: int | None  # seconds etcd has run
    conf_age: int | None  # seconds since etcd.conf was written

    @property
    def stale(self) -> bool:
        """etcd started before its etcd.conf was last written: it runs an older config."""
        if self.process_age is None or self.conf_age is None:
            return False
        return self.process_age > self.conf_age


def parse_member_facts(text: str) -> MemberFacts:
    files: dict[str, bytes] = {}
    shas: dict[str, str] = {}
    ages: list[int] = []
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        path, _, payload = rest.partition(" ")
        if kind == "file":
            files[path] = base64.b64decode(payload)
        elif kind == "sha":
            shas[path] = payload.strip()
        elif kind == "ages":
            ages = [int(x) for x in rest.split() if x.isdigit()]
    return MemberFacts(
        files,
        shas,
        ages[0] if len(ages) == 2 else None,
        ages[1] if len(ages) == 2 else None,
    )


def member_files(
    member: Member,
    view: ClusterView,
    facts: MemberFacts,
    targets: Sequence[str],
    endpoints: Sequence[str],
) -> list[NodeFile]:
    """The files reload manages on one member, for the chosen targets."""
    files = []
    if "etcd" in targets:
        state = _conf_state(facts.files.get(ETCD_CONF), member.init)
        peers = initial_cluster([member], member, view)
        rendered = render_etcd_conf(member, peers, state)
        files.append(NodeFile(ETCD_CONF, rendered, "etcd", "etcd", 0o644))
        password = member.root_password.encode()
        files.append(NodeFile(ETCD_PASS, password, "root", "etcd", 0o640, secret=True))
    if "etcdctl" in targets:
        files.append(NodeFile(PROFILE, render_profile(member, endpoints), "root", "root", 0o644))
    return files


def _conf_state(content: bytes | None, default: str) -> str:
    """initial-cluster-state of the current etcd.conf (a joined member says existing)."""
    try:
        conf = yaml.safe_load(content) if content else None
    except yaml.YAMLError:
        conf = None
    state = conf.get("initial-cluster-state") if isinstance(conf, dict) else None
    return str(state) if state in ("new", "existing") else default


def _old(file: NodeFile, facts: MemberFacts) -> bytes | None:
    """The old content for a diff; a secret's is never read back, only its existence."""
    if file.secret:
        return b"" if file.path in facts.secret_sha else None
    return facts.files.get(file.path)


def differs(file: NodeFile, facts: MemberFacts) -> bool:
    if file.secret:
        return facts.secret_sha.get(file.path) != hashlib.sha256(file.content).hexdigest()
    return facts.files.get(file.path) != file.content


# -- writing --------------------------------------------------------------------------
# $1 path, $2 backup path, $3 owner:group or "keep", $4 mode ("keep": the old file's;
# else for chmod: 0600, o-rwx...), $5 "secret": the backup is made 0600 (it holds the old
# secret). Content on stdin. The temp file sits beside $1: the rename is atomic and a
# link's target must be passed as $1 (a rename over a link replaces the link).
_WRITE = r"""
set -e
if [ -e "$1" ]; then
  cp -p -- "$1" "$2"
  if [ "$5" = secret ]; then chmod 0600 "$2"; fi
fi
t=$(mktemp "$1.etcdsop.XXXXXX"); trap 'rm -f "$t"' EXIT
cat > "$t"
if [ "$3" = keep ] && [ -e "$1" ]; then
  chown --reference="$1" "$t"; chmod --reference="$1" "$t"
else
  chown "$3" "$t"
fi
if [ "$4" != keep ]; then chmod "$4" "$t"; fi
mv -f "$t" "$1"; trap - EXIT
"""


def backup_path(path: str, stamp: str) -> str:
    # Never ends in .sh or .yml: /etc/profile.d/*.sh must not source a backup.
    return f"{path}.{stamp}.bak"


def run_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_with_backup(
    host: RemoteHost,
    path: str,
    content: bytes,
    stamp: str,
    *,
    owner: str | None = None,
    group: str | None = None,
    mode: int | str | None = None,
    existed: bool = True,
    secret: bool = False,
) -> str | None:
    """Atomic write keeping the old file as <path>.<stamp>.bak (0600 when secret);
    owner None keeps the old owner, and the old mode unless mode says otherwise (an int,
    or chmod's symbolic form). Returns the backup path (None when there was no file)."""
    backup = backup_path(path, stamp)
    own = "keep" if owner is None else f"{owner}:{group}"
    if isinstance(mode, int):
        chmod = f"{mode:04o}"
    else:
        chmod = mode or ("keep" if owner is None else "0600")
    argv = ["sh", "-c", _WRITE, "sh", path, backup, own, chmod, "secret" if secret else "plain"]
    host.run(argv, stdin=content)
    return backup if existed else None


# -- the etcd and etcdctl targets -------------------------------------------------------
def reload_members(
    ctx: Context,
    view: ClusterView,
    targets: Sequence[str],
    endpoints: Sequence[str],
    result: ReloadResult,
    stamp: str,
) -> dict[str, MemberFacts]:
    """etcd.conf/etcd.pass/etcdctl.sh on every live inventory member, in parallel."""
    from etcdsop.plan import FileChange, _diff

    members = [m for m in ctx.inventory.members if find_live(m, view.members) is not None]
    chosen = [t for t in targets if t in ("etcd", "etcdctl")]
    facts_by_ip: dict[str, MemberFacts] = {}

    def one(member: Member) -> list[HostOutcome]:
        host = ctx.host(member)
        out = host.run(["sh", "-c", _MEMBER_FACTS, "sh", ETCD_CONF, ETCD_PASS, PROFILE])
        facts = parse_member_facts(out.stdout)
        facts_by_ip[member.ip] = facts
        files = member_files(member, view, facts, chosen, endpoints)
        outcomes = []
        for target in chosen:
            mine = [f for f in files if (f.path == PROFILE) == (target == "etcdctl")]
            todo = [f for f in mine if differs(f, facts)]
            if not todo:
                outcomes.append(HostOutcome(target, member.ip, "unchanged", "up to date"))
                continue
            diff = "".join(
                FileChange(f, "update", _diff(f, _old(f, facts))).diff + "\n" for f in todo
            )
            outcome = HostOutcome(
                target,
                member.ip,
                "changed",
                ("would write " if ctx.options.dry_run else "wrote ")
                + ", ".join(f.path.rsplit("/", 1)[-1] for f in todo),
                files=[f.path for f in todo],
                diff=diff,
            )
            if not ctx.options.dry_run:
                for f in todo:
                    existed = f.path in facts.files or f.path in facts.secret_sha
                    backup = write_with_backup(
                        host,
                        f.path,
                        f.content,
                        stamp,
                        owner=f.owner,
                        group=f.group,
                        mode=f.mode,
                        existed=existed,
                        secret=f.secret,
                    )
                    if backup:
                        outcome.backups.append(backup)
            outcomes.append(outcome)
        return outcomes

    results = ctx.parallel(members, one)
    for member in members:
        value = results[member.ip]
        if isinstance(value, ClusterError):
            for target in chosen:
                result.outcomes.append(HostOutcome(target, member.ip, "failed", value.message))
        else:
            assert isinstance(value, list)
            result.outcomes += value
    return facts_by_ip


# -- rolling restart ------------------------------------------------------------------
def restart_members(
    ctx: Context, view: ClusterView, facts: dict[str, MemberFacts], result: ReloadResult
) -> None:
    """Members running an older etcd.conf, one at a time, the leader last, quorum-guarded."""
    changed_conf = {o.host for o in result.outcomes if o.target == "etcd" and ETCD_CONF in o.files}
    stale = [
        m
        for m in ctx.inventory.members
        if m.ip in facts and (m.ip in changed_conf or facts[m.ip].stale)
    ]
    if not stale:
        ctx.report.info("restart: every member already runs its current etcd.conf")
        return
    for member in leader_last(ctx, stale):
        rolling_restart(ctx, member, result.restarted)
        result.restarted.append(member.ip)


# -- the command ----------------------------------------------------------------------
def reload(ctx: Context, targets: Sequence[str], *, restart: bool = False) -> ReloadResult:
    from etcdsop.clients import password as pgpassword
    from etcdsop.clients import reload as pgreload
    from etcdsop.clients import restart as pgrestart

    inventory, report = ctx.inventory, ctx.report
    result = ReloadResult(tuple(targets), ctx.options.dry_run)
    pg = "patroni" in targets or "vip" in targets
    accounts = rbac.accounts(inventory) if pg else []
    jobs = pgreload.plan_jobs(inventory, targets) if pg else []
    if restart and "etcd" not in targets:
        raise InputError("--restart restarts etcd members: it needs --target etcd (or all)")

    plans: list[tuple[rbac.PgAccount, list[rbac.Action]]] = []

    def check(root: EtcdClient) -> None:
        """Before any change: a password change no client of its cluster would miss."""
        if pg:
            plans[:] = rbac.plan(root, accounts)
            pgpassword.guard(inventory, rbac.password_changes(plans), targets)

    report.phase("live membership")
    if ctx.pki.ca_cert_path.exists() and (warning := ctx.pki.ca_warning()):
        report.warn(warning)
    view = live_root(ctx, result, rotate="etcd" in targets, check=check)
    if not view.live:
        raise ClusterError(
            f"no member of cluster {inventory.cluster!r} answers: nothing to point clients at"
        )
    urls = voter_urls(view)
    if not urls:
        raise ClusterError("the live cluster has no started voter: nothing to point clients at")
    result.endpoints = urls
    report.info(f"voters: {', '.join(urls)}")
    result.notes = cross_check(inventory, view)
    for note in result.notes:
        report.warn(note)

    stamp = run_stamp()
    facts: dict[str, MemberFacts] = {}
    if "etcd" in targets or "etcdctl" in targets:
        report.phase("etcd members")
        facts = reload_members(ctx, view, targets, urls, result, stamp)
        _report(ctx, result, ("etcd", "etcdctl"))
    if pg:
        report.phase("etcd users of the PostgreSQL clusters")
        root = ctx.voter_client(view)
        if result.root_password == "would change":  # dry run: the old one still rules
            root = _client_with(ctx, _live_password(ctx))
        later: list[rbac.PasswordChange] = []
        result.rbac = rbac.sync(
            root, accounts, report, dry_run=ctx.options.dry_run, deferred=later, plans=plans
        )
        report.phase("Patroni and vip-manager")

        def change(item: rbac.PasswordChange) -> None:
            rbac.apply(root, *item)

        pending = pgreload.reload_pg_hosts(
            ctx, jobs, accounts, urls, result, stamp, passwords=later, change_password=change
        )
        _report(ctx, result, ("patroni", "vip"))
        # After the new passwords: a restarted Patroni (and the patronictl that pauses
        # its cluster) authenticates with what its file now says.
        # A cluster an interrupted run left paused is ended here too (see pgrestart).
        marks = pgrestart.PauseMarks(root)
        if pending.restarts or any(marks.get(c) for c in {n.cluster for n in pending.nodes}):
            report.phase("Patroni restarts under maintenance mode (etcd3 hosts changed)")
            pgrestart.restart_clusters(ctx, pending.nodes, result, marks)
    if restart and not ctx.options.dry_run:
        report.phase("rolling restart")
        restart_members(ctx, view, facts, result)
    return result


_MARK: dict[Status, ReportStatus] = {
    "unchanged": "ok",
    "changed": "changed",
    "failed": "failed",
    "skipped": "skipped",
}


def _report(ctx: Context, result: ReloadResult, targets: Sequence[str]) -> None:
    for o in result.outcomes:
        if o.target in targets:
            ctx.report.host(o.host, f"{o.target}: {o.message}", _MARK[o.status])
            if ctx.options.dry_run and o.diff:
                ctx.report.info(o.diff.rstrip())


# -- etcdsop env ------------------------------------------------------------------------
def admin_env(ctx: Context, *, with_password: bool) -> str:
    """etcdctl's exports for the admin node: its CA and CN-less cert, the live voters."""
    import shlex

    tls = ctx.tls_files()
    if tls is None:
        raise ClusterError(f"no admin certificate under {ctx.pki_dir}: run etcdsop create")
    urls: list[str] = []
    try:
        view = ctx.probe()
        urls = voter_urls(view) if view.live else []
    except ClusterError as exc:
        ctx.report.warn(exc.message)
    if not urls:
        urls = [m.client_url for m in ctx.inventory.members]
        ctx.report.warn("no live voter answered: endpoints are the inventory's etcd group")
    values = [
        ("ETCDCTL_API", "3"),
        ("ETCDCTL_ENDPOINTS", ",".join(urls)),
        ("ETCDCTL_CACERT", str(tls.ca_cert.resolve())),
        ("ETCDCTL_CERT", str(tls.client_cert.resolve())),
        ("ETCDCTL_KEY", str(tls.client_key.resolve())),
    ]
    if with_password:
        values.append(("ETCDCTL_USER", f"root:{ctx.inventory.root_password}"))
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values)
