"""Monitoring targets on the infra hosts: what Pigsty's `etcd_register` task writes.

Pigsty's VictoriaMetrics scrapes every file of /infra/targets/etcd/ on its infra hosts;
one file per member, `<cluster>-<seq>.yml`, in Pigsty's own format so either tool may
rewrite it. `create` and `add` register their members, `rm` removes theirs. As in
Pigsty this never fails the command: a host that cannot be reached, or has no target
directory (no monitoring there), is a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdsop.errors import EtcdsopError
from etcdsop.model import InfraHost, Member
from etcdsop.ops.common import Context
from etcdsop.remote import run_parallel

TARGET_DIR = "/infra/targets/etcd"

# stdin: per file "name size\n" then the bytes; a file is replaced only when it differs.
# Arguments: names to delete. Prints one "changed NAME" line per file written or deleted.
_SYNC = r"""
d=$1; shift
[ -d "$d" ] || { echo "no-dir"; exit 0; }
while read -r name size; do
  t=$(mktemp "$d/.$name.XXXXXX")
  head -c "$size" > "$t"
  if cmp -s "$t" "$d/$name"; then rm -f "$t"
  else chmod 0644 "$t"; mv -f "$t" "$d/$name"; echo "changed $name"; fi
done
for name in "$@"; do
  if [ -e "$d/$name" ]; then rm -f "$d/$name"; echo "changed $name"; fi
done
"""


def target_file(member: Member) -> bytes:
    return (
        f"# {member.name} @ {member.ip}\n"
        f"- labels: {{ ip: {member.ip} , ins: {member.name} , cls: {member.cluster} }}\n"
        f"  targets: [ {member.ip}:{member.port} ]\n"
    ).encode()


def register(ctx: Context, members: Sequence[Member]) -> None:
    """Write the target files of `members` on every infra host."""
    _sync(ctx, write=members, delete=())


def deregister(ctx: Context, members: Sequence[Member]) -> None:
    """Delete the target files of `members` on every infra host."""
    _sync(ctx, write=(), delete=members)


def _sync(ctx: Context, *, write: Sequence[Member], delete: Sequence[Member]) -> None:
    infra = ctx.inventory.infra_hosts
    if not infra or not (write or delete):
        return
    verb = "register" if write else "deregister"
    names = ", ".join(m.name for m in (*write, *delete))
    ctx.report.phase(f"monitoring: {verb} {names} on {len(infra)} infra host(s)")
    if ctx.options.dry_run:
        for host in infra:
            ctx.report.host(host.name, f"would {verb} in {TARGET_DIR}", "changed")
        return
    stream = b"".join(
        f"{m.name}.yml {len(body)}\n".encode() + body for m in write for body in [target_file(m)]
    )
    argv = ["sh", "-c", _SYNC, "sh", TARGET_DIR, *(f"{m.name}.yml" for m in delete)]

    def one(host: InfraHost) -> str:
        return ctx.remote(host.name, host.ssh).run(argv, stdin=stream, timeout=30).stdout

    results = run_parallel(infra, one, forks=ctx.options.forks, key=lambda h: h.name)
    for host in infra:
        out = results[host.name]
        if isinstance(out, EtcdsopError):  # a host that failed is a warning, as in Pigsty
            ctx.report.warn(f"{host.name}: monitoring targets not updated: {out.message}")
        elif out.strip() == "no-dir":
            ctx.report.warn(f"{host.name}: no {TARGET_DIR} (no monitoring here): skipped")
        else:
            changed = [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]
            ctx.report.host(
                host.name,
                f"{verb}ed {', '.join(changed)}" if changed else "targets up to date",
                "changed" if changed else "ok",
            )
