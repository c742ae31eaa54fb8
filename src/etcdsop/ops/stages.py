"""The stages commands compose: gather facts, guard, certificates, plan, apply, RBAC.

`create` runs them for every target at once; a join (`add`, or `create` on a live
cluster) runs them for one host. Planning is pure (plan.py); only apply touches hosts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.etcd import EtcdClient
from etcdsop.facts import HostFacts, gather
from etcdsop.guards import create_refusal, existing_conf, pki_refusal
from etcdsop.model import Member
from etcdsop.ops.common import ClusterView, Context
from etcdsop.plan import HostPlan, find_live, plan_host
from etcdsop.remote import RemoteFileSpec
from etcdsop.render import CA_CRT, ETCD_CONF, PeerRef, node_dirs, node_files, render_etcd_conf

CERT_PLACEHOLDER = b"(certificate to be issued)\n"


def gather_facts(ctx: Context, targets: Sequence[Member]) -> dict[str, HostFacts]:
    results = ctx.parallel(targets, lambda m: gather(ctx.host(m), m.data_dir))
    facts: dict[str, HostFacts] = {}
    for member in targets:
        value = results[member.ip]
        if isinstance(value, ClusterError):
            raise value
        assert isinstance(value, HostFacts)
        facts[member.ip] = value
        state = value.active if value.etcd_version else "etcd not installed"
        ctx.report.host(member.ip, f"etcd {value.etcd_version or '-'}, {state}", "info")
    return facts


def check_pki(ctx: Context, targets: Sequence[Member], facts: dict[str, HostFacts]) -> None:
    """Refuse (exit 3) before any certificate is issued when the hosts trust a CA that
    is not this admin node's: a second admin directory without the cluster's PKI
    would otherwise create a CA and restart every member onto it. Without a local CA
    the other inventory hosts are looked at too (`-l` may name only a new one)."""
    path = ctx.pki_dir / "ca" / "ca.crt"
    local = path.read_bytes() if path.is_file() else None
    facts = dict(facts)
    others = [m for m in ctx.inventory.members if m.ip not in facts]
    if local is None and others:
        found = ctx.parallel(others, lambda m: gather(ctx.host(m), m.data_dir, (CA_CRT, ETCD_CONF)))
        facts |= {ip: f for ip, f in found.items() if isinstance(f, HostFacts)}  # reachable
    members = [m for m in ctx.inventory.members if m.ip in facts]
    refusals = [why for m in members if (why := pki_refusal(m, facts[m.ip], local))]
    if refusals:
        raise GuardRefused(
            f"refusing to go on, nothing was changed: {refusals[0]}: {ctx.pki_hint()}",
            details="\n".join(refusals[1:]) or None,
        )


def check_guards(targets: Sequence[Member], facts: dict[str, HostFacts], view: ClusterView) -> None:
    refusals = []
    for member in targets:
        why = create_refusal(
            member,
            facts[member.ip],
            find_live(member, view.members),
            view.live,
            foreign_cluster=member.ip in view.foreign,
        )
        if why:
            refusals.append(why)
    if refusals:
        raise GuardRefused(
            "refusing to create, nothing was changed: " + refusals[0],
            details="\n".join(refusals[1:]) or None,
        )


@dataclass(frozen=True)
class NodeCert:
    cert_pem: bytes
    key_pem: bytes


def issue_certificates(
    ctx: Context, targets: Sequence[Member], issued_names: list[str]
) -> tuple[bytes, dict[str, NodeCert]]:
    """CA, admin and node certificates (re-issued only when needed); in a dry run, the
    reasons they would be issued and the current certificates."""
    pki = ctx.pki
    if ctx.options.dry_run:
        reasons = [("CA", pki.plan_ca()), ("admin", pki.plan_admin())]
        reasons += [(m.name, pki.plan_node(m.name, m.ip)) for m in targets]
        for name, why in reasons:
            if why:
                ctx.report.info(f"certificate {name} would be issued: {why}")
                issued_names.append(name)
        # Nothing is written in a dry run: compare with the certificates as they are.
        ca_pem = CERT_PLACEHOLDER if pki.plan_ca() else pki.ca_cert_pem
        nodes: dict[str, NodeCert] = {}
        for m in targets:
            if pki.plan_node(m.name, m.ip):
                nodes[m.ip] = NodeCert(CERT_PLACEHOLDER, CERT_PLACEHOLDER)
            else:
                base = ctx.pki_dir / "etcd" / m.name
                nodes[m.ip] = NodeCert(
                    base.with_suffix(".crt").read_bytes(), base.with_suffix(".key").read_bytes()
                )
        return ca_pem, nodes
    ca = pki.ensure_ca()
    admin = pki.ensure_admin()
    node_certs = {m.ip: pki.ensure_node(m.name, m.ip, m.cert_validity_days) for m in targets}
    for name, issued in [("CA", ca), ("admin", admin)] + [
        (m.name, node_certs[m.ip]) for m in targets
    ]:
        if issued.issued:
            ctx.report.info(f"certificate {name} issued: {issued.reason}")
            issued_names.append(name)
    return ca.cert_pem, {ip: NodeCert(c.cert_pem, c.key_pem) for ip, c in node_certs.items()}


def plan_member(
    ctx: Context,
    member: Member,
    targets: Sequence[Member],
    facts: HostFacts,
    view: ClusterView,
    certs: tuple[bytes, dict[str, NodeCert]],
) -> HostPlan:
    ca_pem, nodes = certs
    live = find_live(member, view.members)
    joining = view.live and (live is None or not live.started)
    files = node_files(
        member,
        initial_cluster=initial_cluster(targets, member, view),
        init="existing" if joining else member.init,
        endpoints=[m.client_url for m in ctx.inventory.members],
        ca_pem=ca_pem,
        cert_pem=nodes[member.ip].cert_pem,
        key_pem=nodes[member.ip].key_pem,
    )
    return plan_host(member, files, node_dirs(member), facts, live=live, cluster_live=view.live)


def initial_cluster(targets: Sequence[Member], member: Member, view: ClusterView) -> list[PeerRef]:
    """Who etcd expects to meet when it bootstraps this member's data dir.

    A new cluster: the members started together now (a subset chosen with -l must
    not list hosts that will never start: they would count against the quorum).
    A live cluster: its started members plus this one, as they really are.
    """
    if not view.live:
        refs = [PeerRef(m.name, m.peer_url) for m in targets]
    else:
        refs = [
            PeerRef(m.name, m.peer_urls[0])
            for m in view.members
            if m.started and member.peer_url not in m.peer_urls
        ]
        refs.append(PeerRef(member.name, member.peer_url))
    return sorted(refs, key=lambda r: url_sort_key(r.peer_url))


def url_sort_key(url: str) -> tuple[int, object, int]:
    parsed = urlsplit(url)
    try:
        address: object = ipaddress.ip_address(parsed.hostname or "")
        return (0, address, parsed.port or 0)
    except ValueError:
        return (1, parsed.hostname or "", parsed.port or 0)


def report_plans(ctx: Context, plans: Sequence[HostPlan]) -> None:
    """One line per host; a dry run also lists every change with its diff."""
    for plan in plans:
        ip = plan.member.ip
        if not plan.changed:
            ctx.report.host(ip, "no change", "ok")
            continue
        parts = ["install etcd"] if plan.install_package else []
        if plan.dirs:
            parts.append(f"{len(plan.dirs)} dir(s)")
        if plan.changes:
            names = ", ".join(c.path.rsplit("/", 1)[-1] for c in plan.changes)
            parts.append(f"{len(plan.changes)} file(s): {names}")
        if plan.service != "none":
            why = f" ({', '.join(plan.reasons)})" if plan.service == "restart" else ""
            parts.append(f"etcd {plan.service}{why}")
        ctx.report.host(ip, "; ".join(parts), "changed")
        if ctx.options.dry_run:
            for d in plan.dirs:
                ctx.report.info(f"directory {d.path} {d.owner}:{d.group} {d.mode:04o}")
            for change in plan.changes:
                ctx.report.info(change.diff.rstrip() or f"{change.kind} {change.path}")


# -- apply ---------------------------------------------------------------------------
# Package lists may be missing or stale on a fresh host: update once when the install
# fails. Wait for a dpkg lock held by unattended-upgrades instead of failing at once.
_APT_INSTALL = (
    "export DEBIAN_FRONTEND=noninteractive;"
    " i() { apt-get -o DPkg::Lock::Timeout=120 install -y -q etcd-server; };"
    " i || { apt-get -o DPkg::Lock::Timeout=120 update -q && i; }"
)
_RPM_INSTALL = "command -v dnf >/dev/null && exec dnf install -y etcd || exec yum install -y etcd"


def _install_argv(facts_debian: bool) -> list[str]:
    return ["sh", "-c", _APT_INSTALL if facts_debian else _RPM_INSTALL]


def _apply_host(ctx: Context, plan: HostPlan, debian: bool) -> None:
    """One round trip for directories, files and systemd (plus one to install etcd)."""
    host = ctx.host(plan.member)
    if plan.install_package:
        host.run(_install_argv(debian), timeout=600)
        # Debian's package starts a default single-node etcd: ours replaces it. Its data
        # (/var/lib/etcd/default) is marked ours, for rm to know it may delete it.
        host.run(
            [
                "sh",
                "-c",
                "systemctl stop etcd; mkdir -p /var/lib/etcd && touch "
                "/var/lib/etcd/.etcdsop-installed",
            ],
            check=False,
            timeout=90,
        )
    prepare: list[list[str]] = []
    if plan.create_user:
        prepare.append(
            [
                "sh",
                "-c",
                "id -u etcd >/dev/null 2>&1 || useradd --system "
                "--home-dir /var/lib/etcd --shell /usr/sbin/nologin etcd",
            ]
        )
    prepare += [
        ["install", "-d", "-o", d.owner, "-g", d.group, "-m", f"{d.mode:04o}", d.path]
        for d in plan.dirs
    ]
    # `enable` reloads systemd itself: a separate daemon-reload only when not enabling.
    # Debian's etcd-server ships /etc/init.d/etcd too, and `enable` would also run
    # update-rc.d for it (two more systemd reloads, ~3x the time); systemd ignores an
    # init script whose name has a native unit, so that sync is skipped.
    if plan.enable:
        systemd = [["env", "SYSTEMCTL_SKIP_SYSV=1", "systemctl", "enable", "--quiet", "etcd"]]
    else:
        systemd = [["systemctl", "daemon-reload"]] if plan.daemon_reload else []
    specs = [
        RemoteFileSpec(c.file.path, c.file.content, c.file.owner, c.file.group, c.file.mode)
        for c in plan.changes
    ]
    host.put_files(specs, before=prepare, after=systemd)
    ctx.report.host(plan.member.ip, "applied", "changed")


def apply_plans(ctx: Context, plans: Sequence[HostPlan]) -> None:
    todo = [p for p in plans if p.changed]
    by_ip = {p.member.ip: p for p in todo}
    debian = {p.member.ip: _is_debian(ctx, p.member) if p.install_package else True for p in todo}
    results = ctx.parallel(
        [p.member for p in todo], lambda m: _apply_host(ctx, by_ip[m.ip], debian[m.ip])
    )
    failed = [v for v in results.values() if isinstance(v, ClusterError)]
    if failed:
        raise ClusterError(
            f"applying changes failed: {failed[0].message}", details=failed[0].details
        )


def _is_debian(ctx: Context, member: Member) -> bool:
    result = ctx.host(member).run(["sh", "-c", ". /etc/os-release; echo $ID $ID_LIKE"], check=False)
    words = result.stdout.split()
    return bool({"debian", "ubuntu"} & set(words))


# -- after membership changes ---------------------------------------------------------
# What is left to the operator: the clients still name the old membership.
RELOAD_HINT = "etcdsop reload --target etcd,etcdctl,patroni,vip"


def refresh_conf(ctx: Context, leaving: Collection[str] = ()) -> list[str]:
    """Rewrite etcd.conf on the live members (file only, no restart) after a change.

    A later restart then finds the current membership; unreachable hosts are warned
    about, not fatal: the membership change itself is already done. `leaving`: hosts
    just removed (and cleaned), whatever a lagging member's list still says.
    """
    view = ctx.probe()
    members = [
        m
        for m in ctx.inventory.members
        if find_live(m, view.members) is not None and m.ip not in leaving
    ]
    changed: list[str] = []

    def refresh(member: Member) -> None:
        host = ctx.host(member)
        facts = gather(host, member.data_dir, (ETCD_CONF,))
        # Keep the state the member was set up with (a joined one says "existing").
        state = str((existing_conf(facts) or {}).get("initial-cluster-state", member.init))
        conf = render_etcd_conf(member, initial_cluster(members, member, view), state)
        current = facts.files.get(ETCD_CONF)
        if current is None or not current.same_content(conf):
            host.put_file(ETCD_CONF, conf, owner="etcd", group="etcd", mode=0o644)
            changed.append(member.ip)

    results = ctx.parallel(members, refresh)
    for ip, value in results.items():
        if isinstance(value, ClusterError):
            ctx.report.warn(f"{ip}: etcd.conf not refreshed: {value.message}")
        else:
            ctx.report.host(
                ip,
                "etcd.conf refreshed (no restart)" if ip in changed else "etcd.conf up to date",
                "changed" if ip in changed else "ok",
            )
    return sorted(changed)


# -- RBAC ----------------------------------------------------------------------------
def ensure_root_auth(client: EtcdClient, password: str) -> str:
    """Root role + root user + grant + auth enable, each step idempotent."""
    if client.auth_enabled():
        return "already enabled"
    client.role_add("root")
    if not client.user_add("root", password):
        # Left from an earlier attempt: make sure the password is the inventory's.
        client.user_change_password("root", password)
    if "root" not in client.user_roles("root"):
        client.user_grant_role("root", "root")
    client.auth_enable()
    return "enabled"
