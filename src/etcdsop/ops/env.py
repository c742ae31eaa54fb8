"""`etcdsop env`: etcdctl's exports for the admin node."""

from __future__ import annotations

import shlex

from etcdsop.errors import ClusterError
from etcdsop.ops.common import Context
from etcdsop.ops.voters import voter_urls


def admin_env(ctx: Context, *, with_password: bool) -> str:
    """etcdctl's exports for the admin node: its CA and CN-less cert, the live voters."""
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
