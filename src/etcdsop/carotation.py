"""rotate-ca's pure parts: its phases, the state file that says which is done, the trust
each phase puts on the hosts, and the rule that keeps every restart safe.

Phases, in order (etcd reads trusted-ca-file only at start, etcd#11555):

    new-ca    a new CA in files/pki/ca/ca-next.*, the old one archived as
              ca-YYYYMMDD-<fp8>.*; the admin node trusts old + new (old still signs)
    bundle    every member and client trusts old + new; members restarted one at a
              time, the leader last
    reissued  the new CA signs (ca.key/ca.crt); every node, client and admin
              certificate re-signed by it, in place, no restart
    done      every member and client trusts the new CA alone (rolling restart again)

Forward only: a re-run continues from the last phase done; nothing is rolled back.
The rule (`unsafe_restart`): a member is restarted only with a trust set holding the
CA of every member's current certificate, so no restart can cut it off its peers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from cryptography import x509

from etcdsop.certinfo import fingerprint, load_pems, short_fp, signer
from etcdsop.errors import InputError

PHASES = ("new-ca", "bundle", "reissued", "done")
STATE_FILE = "rotation.json"
NEXT = "ca-next"  # the new CA's files until it signs


@dataclass(frozen=True)
class Rotation:
    phase: str  # the last phase completed
    old: str  # sha256 fingerprint of the CA being replaced
    new: str  # of its successor
    archive: str  # where the old CA is kept: ca-YYYYMMDD-<fp8>(.crt/.key)

    def done(self, phase: str) -> bool:
        return PHASES.index(self.phase) >= PHASES.index(phase)

    def to(self, phase: str) -> Rotation:
        return replace(self, phase=phase)

    @property
    def finished(self) -> bool:
        return self.phase == "done"


def parse_state(text: str, where: str) -> Rotation:
    try:
        doc = json.loads(text)
        rotation = Rotation(**{k: str(doc[k]) for k in ("phase", "old", "new", "archive")})
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{where} is damaged: it should say which rotate-ca phase is done "
            "(phase, old, new, archive)"
        ) from None
    if rotation.phase not in PHASES:
        raise InputError(f"{where}: unknown phase {rotation.phase!r} (one of {', '.join(PHASES)})")
    return rotation


def dump_state(rotation: Rotation) -> bytes:
    return (json.dumps(asdict(rotation), indent=2) + "\n").encode()


def archive_name(ca: x509.Certificate, when: datetime) -> str:
    return f"ca-{when.strftime('%Y%m%d')}-{short_fp(ca)}"


def fingerprints(pem: bytes) -> frozenset[str]:
    return frozenset(fingerprint(c) for c in load_pems(pem))


def trust_for(rotation: Rotation, phase: str) -> frozenset[str]:
    """The CAs (fingerprints) a host trusts once `phase` is done on it."""
    if phase in ("bundle", "reissued"):
        return frozenset({rotation.old, rotation.new})
    if phase == "done":
        return frozenset({rotation.new})
    raise ValueError(phase)


def unsafe_restart(
    trust: Iterable[x509.Certificate], certs: Mapping[str, x509.Certificate | None]
) -> list[str]:
    """Whose current certificate (by member name) a member restarted with `trust` would
    refuse: it must be none, or the restart cuts that member off (a lost peer, and with
    two such, a lost quorum). An unknown certificate (None) counts as refused."""
    cas = list(trust)
    return sorted(name for name, cert in certs.items() if cert is None or signer(cert, cas) is None)


def next_phase(rotation: Rotation | None) -> str:
    """The phase a run starts with: a fresh rotation after none, or after a finished one."""
    if rotation is None or rotation.finished:
        return PHASES[0]
    return PHASES[PHASES.index(rotation.phase) + 1]
