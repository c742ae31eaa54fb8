"""reload's etcd and etcdctl targets: etcd.conf, etcd.pass and etcdctl.sh on the members.

Only files whose content differs are written, each after a backup beside it
(ops/filebackup.py); a failed member never stops the others.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from etcdsop.errors import ClusterError
from etcdsop.model import Member
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.filebackup import write_with_backup
from etcdsop.ops.outcomes import HostOutcome, ReloadResult
from etcdsop.ops.stages import initial_cluster
from etcdsop.plan import FileChange, _diff, find_live
from etcdsop.render import ETCD_CONF, ETCD_PASS, PROFILE, NodeFile, render_etcd_conf, render_profile

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
