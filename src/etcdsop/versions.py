"""etcd versions for `etcdsop upgrade`: parsing, the target, the one-minor rule, the
package version every host installs, and the order members go in. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from etcdsop.errors import GuardRefused, InputError

# "3.5.30", "v3.5.30", Debian's "3.5.30-2", "1:3.5.30-2+b1", etcd's "3.4.0" cluster version.
_VERSION = re.compile(r"^(?:\d+:)?v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~].*)?$")

# What the 3.6 upgrade guide asks of every 3.5 member first: 3.5.26 fixes the zombie
# members that make 3.6 fail to start; the guide now names 3.5.32 (etcd-rules.md).
MIN_BEFORE_36 = (3, 5, 26)
ADVISED_BEFORE_36 = (3, 5, 32)


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version | None:
        """A version from etcd's or the package manager's spelling; None if it is none."""
        match = _VERSION.match(text.strip())
        if match is None:
            return None
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    @property
    def line(self) -> tuple[int, int]:
        """The minor line, (3, 5) for 3.5.30."""
        return (self.major, self.minor)

    @property
    def line_text(self) -> str:
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Target:
    """What --to asks for: a minor line (its highest patch available) or one version."""

    line: tuple[int, int]
    exact: Version | None = None

    def matches(self, version: Version) -> bool:
        return version == self.exact if self.exact else version.line == self.line

    def __str__(self) -> str:
        return str(self.exact) if self.exact else f"{self.line[0]}.{self.line[1]}"


def parse_target(text: str) -> Target:
    """--to 3.5 or --to 3.5.30 (exit 1 on anything else)."""
    cleaned = text.strip().removeprefix("v")
    version = Version.parse(cleaned) if re.fullmatch(r"\d+\.\d+(\.\d+)?", cleaned) else None
    if version is None:
        raise InputError(
            f"--to {text}: give a minor version (3.5: its highest patch available) "
            "or an exact one (3.5.30)"
        )
    exact = version if cleaned.count(".") == 2 else None
    return Target(version.line, exact)


def choose_target(asked: Target | None, cluster: Version) -> Target:
    """The target line: the one asked, or the next minor after the cluster version.

    One minor at a time (etcd supports nothing else), never down; the cluster's own line
    is fine (patch releases, or a re-run after an upgrade stopped half-way)."""
    if asked is None:
        return Target((cluster.major, cluster.minor + 1))
    where = f"the cluster version is {cluster.line_text}"
    if asked.line[0] != cluster.major:
        raise InputError(f"--to {asked}: {where}: etcdsop upgrades within etcd {cluster.major}")
    if asked.line < cluster.line:
        raise InputError(f"--to {asked}: {where}: etcd does not support downgrades this way")
    if asked.line[1] > cluster.minor + 1:
        step = f"{cluster.major}.{cluster.minor + 1}"
        raise InputError(
            f"--to {asked}: {where}: etcd upgrades one minor at a time: run "
            f"etcdsop upgrade --to {step} first"
        )
    return asked


def check_not_older(target: Version, members: Mapping[str, Version]) -> None:
    """No member is taken to an older version than it runs (exit 1)."""
    newer = [f"{name} runs {v}" for name, v in sorted(members.items()) if v > target]
    if newer:
        raise InputError(
            f"target {target} is older than what members run ({', '.join(newer)}): "
            "etcdsop does not downgrade; give --to a version at least as new"
        )


def debian_key(version: str) -> tuple[Version, tuple[int, ...]]:
    """Sort key for a Debian version of etcd: upstream first, then the revision's numbers
    (3.5.30-2 after 3.5.30-1; enough for one package's versions, not all of dpkg's rules)."""
    upstream = Version.parse(version) or Version(0, 0, 0)
    revision = version.rsplit("-", 1)[1] if "-" in version else ""
    return upstream, tuple(int(n) for n in re.findall(r"\d+", revision))


def pick_package_version(target: Target, available: Mapping[str, Sequence[str]]) -> str:
    """The package version (Debian's, "3.5.30-2") to install on every host: the highest
    matching the target that every host can install. Refused (exit 3) when a host has
    none, or the hosts have no version in common."""
    matching = {
        host: {v for v in versions if (p := Version.parse(v)) and target.matches(p)}
        for host, versions in available.items()
    }
    missing = sorted(h for h, found in matching.items() if not found)
    if missing:
        shown = "; ".join(
            f"{h} has {', '.join(sorted(available[h], key=debian_key, reverse=True)) or 'none'}"
            for h in missing
        )
        raise GuardRefused(
            f"etcd {target} is not available from the package manager on {', '.join(missing)} "
            f"({shown}): add a repository that carries it (then apt-get update) and run "
            "etcdsop upgrade again; nothing was changed"
        )
    common = set.intersection(*matching.values()) if matching else set()
    if not common:
        shown = "; ".join(f"{h}: {', '.join(sorted(vs))}" for h, vs in sorted(matching.items()))
        raise GuardRefused(
            f"no version of etcd {target} is available on every host ({shown}): give one "
            "with --to, or make the same version available everywhere; nothing was changed"
        )
    return max(common, key=debian_key)


def check_before_36(target: Version, members: Mapping[str, Version]) -> list[str]:
    """3.5 -> 3.6: every member at least 3.5.26 (refused, exit 3); warnings for members
    below what the 3.6 guide advises now."""
    if target.line != (3, 6):
        return []
    low = [f"{n} runs {v}" for n, v in sorted(members.items()) if v.line == (3, 5) and _lt(v)]
    if low:
        least = ".".join(map(str, MIN_BEFORE_36))
        raise GuardRefused(
            f"refusing to upgrade to 3.6: every member must run {least} or later first "
            f"({', '.join(low)}): run etcdsop upgrade --to 3.5 first"
        )
    advised = ".".join(map(str, ADVISED_BEFORE_36))
    return [
        f"{n} runs {v}: the 3.6 upgrade guide advises {advised} or later first"
        for n, v in sorted(members.items())
        if (v.major, v.minor, v.patch) < ADVISED_BEFORE_36
    ]


def _lt(version: Version) -> bool:
    return (version.major, version.minor, version.patch) < MIN_BEFORE_36


# etcd 3.4.42, 3.5.28 and 3.6.9 (CVE fixes) serve the member list and lease keepalive
# only to authenticated clients. Patroni authenticates for them from 4.1.1 on (its
# release notes); an older Patroni on an etcd with auth enabled can no longer list the
# members, nor keep its leader key's lease alive: its leader key expires.
AUTH_GATED = {(3, 4): 42, (3, 5): 28, (3, 6): 9}
PATRONI_AUTH_READY = Version(4, 1, 1)


def auth_gated(version: Version) -> bool:
    """Whether this etcd refuses the member list and lease keepalive without a login."""
    patch = AUTH_GATED.get(version.line)
    if patch is None:
        return version.line > max(AUTH_GATED)
    return version.patch >= patch


def patroni_refusal(target: Version, patroni: Mapping[str, Version]) -> str | None:
    """Why Patroni (host label -> its version) would break on target, or None."""
    old = [f"{v} on {host}" for host, v in sorted(patroni.items()) if v < PATRONI_AUTH_READY]
    if not old or not auth_gated(target):
        return None
    below = f"{target.line_text}.{AUTH_GATED[target.line] - 1}" if target.line in AUTH_GATED else ""
    older = f", or give --to {below} or older" if below else ""
    return (
        f"refusing to upgrade to {target}: Patroni {', '.join(old)} would lose etcd: etcd "
        "3.4.42, 3.5.28 and 3.6.9 serve the member list and lease keepalive only to "
        f"authenticated clients, which Patroni does from {PATRONI_AUTH_READY} on (its leader "
        f"key would expire): upgrade Patroni first{older}; nothing was changed"
    )


@dataclass(frozen=True)
class Candidate:
    """A member still to go (the live view of one step)."""

    id: int
    name: str
    learner: bool = False


def next_member(pending: Sequence[Candidate], leader: int) -> Candidate | None:
    """Learners first, then followers, the leader last (asked again before each step:
    a leader change during the run moves the new leader to the end)."""
    if not pending:
        return None
    ranked = sorted(pending, key=lambda c: (c.id == leader, not c.learner))
    return ranked[0]


def planned_order(pending: Sequence[Candidate], leader: int) -> list[Candidate]:
    """The order next_member gives while the leader stays where it is."""
    left = list(pending)
    order = []
    while (chosen := next_member(left, leader)) is not None:
        order.append(chosen)
        left.remove(chosen)
    return order


def cluster_reached(cluster_version: str, target: Version) -> bool:
    """Whether GET /version's etcdcluster ("3.5.0") is on the target's line."""
    found = Version.parse(cluster_version)
    return found is not None and found.line >= target.line
