"""The etcd packages on a host, for `etcdsop upgrade`: what owns etcd's binaries, what
the package manager offers, and installing a version without letting the package
restart etcd or touch our unit and etcd.conf.

Debian/Ubuntu (apt) only: etcd's packages on RPM systems come from many places with
their own units, and none of those is reachable here to prove the steps on.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from etcdsop.errors import ClusterError
from etcdsop.remote import RemoteHost
from etcdsop.render import ETCD_CONF, UNIT
from etcdsop.versions import Version

BINARIES = ("/usr/bin/etcd", "/usr/bin/etcdctl", "/usr/bin/etcdutl")

# One round trip, read-only. Lines: "apt yes|no", "own <binary> <package|->",
# "installed <package> <version>", "madison <package> <version>", "etcdutl yes|no",
# "conf <line>" for each etcd.conf line naming the v2 API or an experimental flag,
# "guard left" when an interrupted install left our policy-rc.d (or the one it set aside).
_FACTS = r"""
command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 \
  || { echo "apt no"; exit 0; }
echo "apt yes"
pkgs=""
for b in $BINARIES; do
  [ -e "$b" ] || continue
  o=$(dpkg-query -S "$b" 2>/dev/null | grep -v '^diversion' | head -n1 | cut -d: -f1)
  echo "own $b ${o:--}"
  [ -n "$o" ] && case " $pkgs " in *" $o "*) ;; *) pkgs="$pkgs $o";; esac
done
for p in $pkgs; do
  echo "installed $p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null)"
  apt-cache madison "$p" 2>/dev/null | awk -F'|' -v p="$p" \
    '{gsub(/ /, "", $1); gsub(/ /, "", $2); if ($1 == p) print "madison " p " " $2}'
done
if [ -x /usr/bin/etcdutl ]; then echo "etcdutl yes"; else echo "etcdutl no"; fi
grep -E '^[[:space:]]*(enable-v2|experimental-)' $CONF 2>/dev/null | sed 's/^/conf /'
P=/usr/sbin/policy-rc.d
if { [ -e "$P" ] && grep -qF @MARK@ "$P"; } || [ -e "$P.etcdsop-saved" ]; then echo "guard left"; fi
exit 0
"""


@dataclass
class PackageFacts:
    host: str
    apt: bool = False
    owners: dict[str, str] = field(default_factory=dict)  # binary -> package ("" = none)
    installed: dict[str, str] = field(default_factory=dict)  # package -> version
    available: dict[str, list[str]] = field(default_factory=dict)  # package -> versions
    etcdutl: bool = False
    conf_lines: list[str] = field(default_factory=list)  # v2 / experimental lines
    guard_left: bool = False  # our policy-rc.d from an interrupted install

    @property
    def packages(self) -> list[str]:
        return sorted(set(self.owners.values()) - {""})

    def installable(self) -> list[str]:
        """Versions every one of the host's etcd packages offers (they go together)."""
        sets = [set(self.available.get(p, [])) for p in self.packages]
        return sorted(set.intersection(*sets)) if sets else []

    def refusal(self) -> str | None:
        """Why etcdsop cannot upgrade this host through its package manager, or None."""
        if not self.apt:
            return (
                f"host {self.host} has no apt: etcdsop upgrade supports Debian/Ubuntu hosts "
                "only; upgrade etcd there by hand (one member at a time, leader last)"
            )
        if "/usr/bin/etcd" not in self.owners:
            return f"host {self.host} has no /usr/bin/etcd (the binary our unit runs)"
        unowned = [b for b, p in self.owners.items() if not p]
        if unowned:
            return (
                f"host {self.host}: {', '.join(unowned)} belong(s) to no package (installed by "
                "hand?): etcdsop upgrades etcd only through the package manager"
            )
        return None


def parse_facts(host: str, text: str) -> PackageFacts:
    facts = PackageFacts(host)
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        words = rest.split()
        if kind == "apt":
            facts.apt = rest.strip() == "yes"
        elif kind == "own" and len(words) == 2:
            facts.owners[words[0]] = "" if words[1] == "-" else words[1]
        elif kind == "installed" and words:
            facts.installed[words[0]] = words[1] if len(words) > 1 else ""
        elif kind == "madison" and len(words) == 2:
            known = facts.available.setdefault(words[0], [])
            if words[1] not in known:
                known.append(words[1])
        elif kind == "etcdutl":
            facts.etcdutl = rest.strip() == "yes"
        elif kind == "conf":
            facts.conf_lines.append(rest.strip())
        elif kind == "guard":
            facts.guard_left = rest.strip() == "left"
    return facts


def gather(host: RemoteHost) -> PackageFacts:
    script = _FACTS.replace("$BINARIES", " ".join(BINARIES)).replace("$CONF", ETCD_CONF)
    script = script.replace("@MARK@", shlex.quote(MARK))
    return parse_facts(host.label, host.run(["sh", "-c", script], timeout=60).stdout)


def patroni_version(host: RemoteHost) -> Version | None:
    """The Patroni this PostgreSQL host runs (`patroni --version`), None without one."""
    result = host.run(
        ["sh", "-c", "command -v patroni >/dev/null || exit 0; patroni --version"], timeout=60
    )
    words = result.stdout.split()
    return Version.parse(words[-1]) if words else None


def v2store_refusal(host: RemoteHost, data_dir: str) -> str | None:
    """Before 3.6 (no v2 store any more): `etcdutl check v2store` where this etcdutl
    has it; a v2 store holding more than membership must be migrated first."""
    probe = host.run(["etcdutl", "check", "v2store", "--help"], check=False, timeout=30)
    if probe.rc != 0:
        return None  # an etcdutl without the check (older 3.5): nothing to ask it
    result = host.run(
        ["etcdutl", "check", "v2store", "--data-dir", data_dir], check=False, timeout=120
    )
    if result.rc == 0:
        return None
    said = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1:] or ["no output"]
    return (
        f"host {host.label}: etcdutl check v2store says the v2 store holds custom data "
        f"({said[0]}): 3.6 has no v2 store; see etcd's v2 migration guide first"
    )


# What apt would do for the install, without doing it (no lock taken): Inst/Remv lines.
_SIMULATE = r"""
apt-get -s -q -o Debug::NoLocking=1 install --no-install-recommends "$@" 2>&1
"""


def other_changes(ours: list[str], simulation: str) -> list[str]:
    """What else apt would change (from `apt-get -s install`): a removal, or another
    installed package up- or downgraded, which would run with its service restarts
    forbidden (policy-rc.d); a new dependency is fine. An "E:" line stands for itself."""
    found = []
    for line in simulation.splitlines():
        words = line.split()
        if line.startswith("E: "):
            found.append(line[3:].strip())
        elif len(words) >= 2 and words[0] == "Remv":
            found.append(f"remove {words[1]}")
        elif (
            len(words) >= 3
            and words[0] == "Inst"
            and words[1] not in ours
            and words[2].startswith("[")
        ):
            found.append(f"upgrade {words[1]} {words[2].strip('[]')}")
    return found


def install_refusal(host: RemoteHost, packages: list[str], version: str) -> str | None:
    """Why installing would change more than etcd's packages on this host, or None."""
    specs = [f"{p}={version}" for p in packages]
    result = host.run(["sh", "-c", _SIMULATE, "sh", *specs], check=False, timeout=120)
    found = other_changes(packages, result.stdout)
    if not found and result.rc != 0:
        found = [(result.stdout.strip().splitlines() or [f"exit {result.rc}"])[-1]]
    if not found:
        return None
    return (
        f"host {host.label}: apt-get install {' '.join(specs)} would also "
        f"{'; '.join(found[:5])}: etcdsop changes only etcd's packages (upgrade or remove "
        "the others first, e.g. apt-get upgrade on that host); nothing was changed"
    )


# A policy-rc.d that says 101 ("action forbidden") keeps the package's maintainer
# scripts from starting or restarting etcd: etcdsop restarts it, one member at a time.
# Whatever was there before is put back, also after an interrupted run (the marker).
MARK = "# etcdsop upgrade: no service (re)starts while packages change"
# Who holds dpkg's locks (apt, dpkg, unattended-upgrades...), "<command> (pid N) holds
# <path>", or nothing. apt and dpkg take fcntl locks, which flock(1) does not see:
# lslocks (util-linux, essential on Debian/Ubuntu) lists them with the holder.
_DPKG_HOLDER = r"""
dpkg_holder() {
  command -v lslocks >/dev/null 2>&1 \
    || { echo "an unknown process (no lslocks on the host to ask)"; return 0; }
  lslocks --noheadings --raw -o PID,COMMAND,PATH 2>/dev/null | awk '
    $3 == "/var/lib/dpkg/lock-frontend" || $3 == "/var/lib/dpkg/lock" {
      print $2 " (pid " $1 ") holds " $3; exit }'
}
"""
# Puts back what was there before: ours removed, the one set aside moved back (a
# policy-rc.d that is not ours, put there since, is left alone, and the saved one too).
# Never while a dpkg runs (an install whose shell was killed goes on): its maintainer
# scripts would restart etcd on every host at once; ours is kept, a note says who runs.
_GUARD = r"""
set -u
P=/usr/sbin/policy-rc.d
MARK=@MARK@
cleanup() {
  if [ -e "$P" ] && ! grep -qF "$MARK" "$P"; then return 0; fi
  held=$(dpkg_holder)
  if [ -n "$held" ]; then
    echo "note: kept $P (no service restarts) while $held: etcdsop upgrade puts it back"
    return 0
  fi
  rm -f "$P"
  if [ -e "$P.etcdsop-saved" ]; then mv "$P.etcdsop-saved" "$P"; fi
}
"""
# Until no process holds dpkg's locks, at most $1 seconds: what still holds one then.
_WAIT_DPKG = r"""
end=$(( $(date +%s) + $1 ))
while held=$(dpkg_holder) && [ -n "$held" ]; do
  [ "$(date +%s)" -ge "$end" ] && { echo "$held"; exit 0; }
  sleep 1
done
exit 0
"""
_INSTALL = r"""
if [ -e "$P" ] && ! grep -qF "$MARK" "$P" && [ ! -e "$P.etcdsop-saved" ]; then
  mv "$P" "$P.etcdsop-saved"
fi
trap cleanup EXIT
trap 'exit 130' HUP INT TERM
printf '#!/bin/sh\n%s\nexit 101\n' "$MARK" > "$P"
chmod 0755 "$P"
state() { sha256sum "$UNIT" "$CONF" 2>&1; systemctl is-enabled etcd 2>&1; }
before=$(state)
enabled=$(systemctl is-enabled etcd 2>/dev/null)
export DEBIAN_FRONTEND=noninteractive
dpkg --configure -a >/dev/null 2>&1  # finish a run that was interrupted
apt-get -q -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confold \
  -o Dpkg::Options::=--force-confdef install --no-install-recommends --no-remove "$@" \
  || exit 10
systemctl daemon-reload
now=$(systemctl is-enabled etcd 2>/dev/null)
if [ "$now" != "$enabled" ]; then
  echo "note: the package changed etcd's unit from $enabled to $now: set back"
  if [ "$enabled" = enabled ]; then systemctl enable --quiet etcd
  else systemctl disable --quiet etcd; fi
fi
after=$(state)
if [ "$before" != "$after" ]; then
  printf 'our unit or etcd.conf changed during the install:\n%s\n%s\n' "$before" "$after" >&2
  exit 11
fi
fragment=$(systemctl show -p FragmentPath --value etcd)
[ "$fragment" = "$UNIT" ] || { echo "etcd runs from $fragment, not $UNIT" >&2; exit 12; }
exit 0
"""


def install_outcome(rc: int) -> str:
    """What the install script's exit code says (any other: its shell was killed or
    stopped, the package may be half-installed: a re-run finishes it)."""
    known = {
        10: "failed",
        11: "left etcd's unit or etcd.conf changed",
        12: f"left etcd running from another unit than {UNIT}",
    }
    return known.get(rc, f"was interrupted (exit {rc})")


def install(host: RemoteHost, packages: list[str], version: str) -> list[str]:
    """Install every package at version, etcd left running on its old binary until our
    restart; the notes it printed (a unit it had to set back)."""
    script = _guard() + _INSTALL.replace("$UNIT", UNIT).replace("$CONF", ETCD_CONF)
    specs = [f"{p}={version}" for p in packages]
    result = host.run(["sh", "-c", script, "sh", *specs], check=False, timeout=900)
    if result.rc == 0:
        return [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    lines = (result.stdout + "\n" + result.stderr).strip().splitlines()
    said = "\n".join(line for line in lines[-15:] if "apt-utils is not installed" not in line)
    what = install_outcome(result.rc)
    raise ClusterError(f"host {host.label}: apt-get install {' '.join(specs)} {what}", details=said)


def _guard() -> str:
    return _DPKG_HOLDER + _GUARD.replace("@MARK@", shlex.quote(MARK))


def wait_dpkg_idle(host: RemoteHost, timeout: float) -> str | None:
    """Wait, at most timeout seconds, until no dpkg or apt runs on the host (one left
    by a killed run goes on): None, or what still holds dpkg's lock then."""
    script = _DPKG_HOLDER + _WAIT_DPKG
    seconds = str(max(int(timeout), 0))
    result = host.run(["sh", "-c", script, "sh", seconds], timeout=timeout + 60)
    return result.stdout.strip() or None


def restore_guard(host: RemoteHost) -> str | None:
    """Put back the policy-rc.d an interrupted install left (ours keeps every package
    from starting or restarting any service on the host); None, or why ours was kept
    (a dpkg runs)."""
    result = host.run(["sh", "-c", _guard() + "cleanup\n"], timeout=60)
    kept = [line for line in result.stdout.splitlines() if line.startswith("note: kept")]
    return kept[0].removeprefix("note: ") if kept else None
