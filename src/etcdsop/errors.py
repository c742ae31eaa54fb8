"""One exception root; each subclass carries the exit code the CLI maps it to.

Codes follow Pigsty's scripts where they overlap: 0 ok, 1 invalid input,
2 cluster operation failed, 4 member operation failed; 3 is ours: refused by a
guard (safeguard, quorum, existing data).
"""

from __future__ import annotations


class EtcdsopError(Exception):
    """A failure the user can act on: printed as one line, never as a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Extra lines shown under the message (e.g. a host's last journal lines).
        self.details = details


class InputError(EtcdsopError):
    """Bad inventory, option or argument; raised before any host is touched."""

    exit_code = 1


class ClusterError(EtcdsopError):
    """A cluster-wide operation failed (unreachable host, etcd not healthy in time...)."""

    exit_code = 2


class GuardRefused(EtcdsopError):
    """A safety guard refused the operation (safeguard, quorum, foreign data)."""

    exit_code = 3


class MemberError(EtcdsopError):
    """Adding, removing or changing one member failed."""

    exit_code = 4


class Interrupted(EtcdsopError):
    """Ctrl-C, reported with the state it left (what was kept, what to re-run)."""

    exit_code = 130


class LockLost(ClusterError):
    """The cluster lock's lease could not be renewed: the command stopped itself."""

    exit_code = 2
