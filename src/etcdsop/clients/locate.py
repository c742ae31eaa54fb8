"""Which files a PostgreSQL host's Patroni really uses: its config and its etcd client TLS.

Pigsty v4 renders /pg/conf/<pg_instance>.yml and links /etc/patroni/patroni.yml to it;
its unit runs `patroni /etc/patroni/patroni.yml`. Pigsty 2.x chained
/etc/patroni/patroni.yml -> /pg/bin/patroni.yml -> /pg/conf/<ins>.yml -> /pg/conf/oltp.yml.
So: the config the unit's ExecStart names, else `patroni_conf`, else the first of the
known paths that exists; links resolved, because a rename over a link would replace the
link with a plain file and leave Patroni reading the old target.

Pigsty's clients authenticate with /pg/cert/{ca.crt,server.crt,server.key}: where the
files the etcd3 section names are valid for the cluster's CA they are used as they are.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from etcdsop.pki import renewal_due

KNOWN_CONFS = ("/etc/patroni/patroni.yml", "/pg/bin/patroni.yml")
_SHA256 = hashes.SHA256()

# Arguments: candidate paths. Prints the unit's ExecStart and, for every candidate and
# every .yml argument of ExecStart, where it leads (readlink -f).
LOCATE = r"""
exec=$(systemctl show -p ExecStart --value patroni 2>/dev/null | head -1)
echo "exec $exec"
args=$(printf '%s\n' "$exec" | sed -n 's/.*argv\[\]=\([^;]*\).*/\1/p')
for p in "$@" $args; do
  case $p in /*) ;; *) continue ;; esac
  if [ -e "$p" ]; then echo "path $p $(readlink -f -- "$p")"; else echo "nopath $p"; fi
done
exit 0
"""

# Arguments: cacert, cert, key of the etcd3 section. The key never leaves the host:
# only whether it matches the certificate (openssl, as ca-certificates brings it).
CHECK_TLS = r"""
for p in "$1" "$2"; do
  if [ -f "$p" ]; then echo "file $p $(base64 -w0 "$p")"; fi
done
if [ -f "$3" ]; then
  a=$(openssl x509 -noout -pubkey -in "$2" 2>/dev/null | sha256sum | cut -d' ' -f1)
  b=$(openssl pkey -pubout -in "$3" 2>/dev/null | sha256sum | cut -d' ' -f1)
  empty=$(printf '' | sha256sum | cut -d' ' -f1)
  if [ "$a" = "$b" ] && [ "$a" != "$empty" ]; then echo "keymatch yes"; else echo "keymatch no"; fi
fi
exit 0
"""


@dataclass(frozen=True)
class Located:
    """Patroni's config on one host: the path it is started with and the file behind it."""

    conf: str  # as the unit (or the inventory) names it; patronictl -c uses it
    target: str  # links resolved: the file reload edits in place
    note: str = ""  # something the operator should know (printed with the outcome)

    @property
    def linked(self) -> bool:
        return self.conf != self.target


@dataclass
class LocateFacts:
    exec_args: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)  # path -> final target


def parse_locate(text: str) -> LocateFacts:
    facts = LocateFacts()
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "exec":
            args = rest.split("argv[]=", 1)[1].split(";", 1)[0] if "argv[]=" in rest else ""
            facts.exec_args = args.split()
        elif kind == "path":
            path, _, final = rest.partition(" ")
            if final:
                facts.resolved[path] = final.strip()
    return facts


def exec_conf(args: list[str]) -> str | None:
    """The config of `patroni <config>` (the last .yml/.yaml argument)."""
    found = [a for a in args[1:] if a.endswith((".yml", ".yaml")) and a.startswith("/")]
    return found[-1] if found else None


def choose(facts: LocateFacts, inventory_conf: str | None) -> Located | str:
    """The file Patroni reads, or why none was found (that host fails alone)."""
    from_unit = exec_conf(facts.exec_args)
    note = ""
    if from_unit is not None:
        conf = from_unit
        if inventory_conf and facts.resolved.get(inventory_conf) != facts.resolved.get(conf):
            note = (
                f"patroni_conf {inventory_conf} is not what patroni.service runs: "
                f"edited {conf}, the unit's"
            )
    elif inventory_conf:
        conf = inventory_conf
    else:
        conf = next((p for p in KNOWN_CONFS if p in facts.resolved), KNOWN_CONFS[0])
    target = facts.resolved.get(conf)
    if target is None:
        tried = "patroni.service's ExecStart names none, " if from_unit is None else ""
        return f"{conf} is missing ({tried}set patroni_conf to the file Patroni reads)"
    return Located(conf, target, note)


# -- client TLS ---------------------------------------------------------------------------
@dataclass
class TlsFacts:
    files: dict[str, bytes] = field(default_factory=dict)
    key_matches: bool = False


def parse_tls(text: str) -> TlsFacts:
    facts = TlsFacts()
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "file":
            path, _, payload = rest.partition(" ")
            facts.files[path] = base64.b64decode(payload)
        elif kind == "keymatch":
            facts.key_matches = rest.strip() == "yes"
    return facts


def _certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def tls_verdict(
    ca_pem: bytes,
    paths: tuple[str, str, str],
    facts: TlsFacts,
    now: datetime | None = None,
) -> str | None:
    """None when the host's files are usable with the cluster's CA, else why not."""
    cacert, cert_path, _ = paths
    ca = _certs(ca_pem)[0]
    bundle = _certs(facts.files.get(cacert, b""))
    if not bundle:
        return f"{cacert} is missing or not a certificate"
    if all(c.fingerprint(_SHA256) != ca.fingerprint(_SHA256) for c in bundle):
        return f"{cacert} does not hold the cluster's CA"
    leaf = _certs(facts.files.get(cert_path, b""))
    if not leaf:
        return f"{cert_path} is missing or not a certificate"
    try:
        leaf[0].verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return f"{cert_path} is not issued by the cluster's CA"
    moment = now or datetime.now(timezone.utc)
    # Due as our own certificates are (pki.renewal_due): expired, or near its end.
    if leaf[0].not_valid_after_utc <= moment or renewal_due(leaf[0], ca, moment):
        return f"{cert_path} expires {leaf[0].not_valid_after_utc.date().isoformat()}"
    if not facts.key_matches:
        return f"{paths[2]} is missing or does not match {cert_path}"
    return None
