"""The systemd timer on the admin node that runs `etcdsop backup` on a schedule.

Two units, `etcdsop-backup-<cluster>.service` (oneshot) and `.timer`, in
/etc/systemd/system. The service runs this very etcdsop (the same Python, its package
directory on PYTHONPATH) on the same inventory, so the timer backs up what the
operator backs up by hand. No secret is in them: the password stays in the inventory.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import etcdsop
from etcdsop.errors import ClusterError, InputError

UNIT_DIR = Path("/etc/systemd/system")
_SYSTEMD_RUNNING = Path("/run/systemd/system")
_UNSAFE = set(" \t\n\"'\\;")


@dataclass(frozen=True)
class TimerUnits:
    service: str
    timer: str
    service_text: str
    timer_text: str


def unit_name(cluster: str) -> str:
    return f"etcdsop-backup-{cluster}"


def _word(text: str, what: str) -> str:
    """One ExecStart word as systemd reads it: no quoting needed, `%` escaped."""
    if not text or _UNSAFE & set(text):
        raise InputError(f"{what} {text!r}: white space, quotes or ';' cannot go in a timer unit")
    return text.replace("%", "%%")


def render_units(
    cluster: str,
    inventory: Path,
    *,
    on_calendar: str,
    keep: int,
    pki_dir: Path | None = None,
    python: str = sys.executable,
    package_root: Path | None = None,
) -> TimerUnits:
    """The two unit files (pure: paths in, text out)."""
    root = package_root or Path(etcdsop.__file__).resolve().parent.parent
    if "\n" in on_calendar or not on_calendar.strip():
        raise InputError(f"--on-calendar {on_calendar!r}: not a calendar spec")
    argv = [python, "-m", "etcdsop", "backup", "-i", str(inventory), "--keep", str(keep)]
    if pki_dir is not None:
        argv += ["--pki-dir", str(pki_dir)]
    exec_start = " ".join(_word(a, "path") for a in argv)
    name = unit_name(cluster)
    service = f"""# managed by etcdsop (etcdsop backup --install-timer / --remove-timer)
[Unit]
Description=etcdsop backup of etcd cluster {cluster}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
Environment=PYTHONPATH={_word(str(root), "path")}
WorkingDirectory={_word(str(inventory.parent), "path")}
ExecStart={exec_start}
"""
    timer = f"""# managed by etcdsop (etcdsop backup --install-timer / --remove-timer)
[Unit]
Description=etcdsop backup of etcd cluster {cluster}, on a schedule

[Timer]
OnCalendar={on_calendar.strip()}
Persistent=true
Unit={name}.service

[Install]
WantedBy=timers.target
"""
    return TimerUnits(f"{name}.service", f"{name}.timer", service, timer)


def _systemctl(*args: str) -> str:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ClusterError(
            f"systemctl {' '.join(args)} failed (exit {proc.returncode}): "
            + (proc.stderr.strip() or proc.stdout.strip())
        )
    return proc.stdout


def _require_systemd(cron_argv: Sequence[str]) -> None:
    if not _SYSTEMD_RUNNING.is_dir():
        raise ClusterError(
            "systemd does not run on this admin node, so no timer can be installed: "
            "schedule it with cron instead, e.g. `0 * * * * " + " ".join(cron_argv) + "`"
        )


def check_calendar(on_calendar: str) -> None:
    """systemd's own verdict on the spec, when systemd-analyze is there (exit 1 if bad)."""
    try:
        proc = subprocess.run(
            ["systemd-analyze", "calendar", on_calendar], capture_output=True, text=True, timeout=10
        )
    except FileNotFoundError:
        return
    if proc.returncode != 0:
        raise InputError(f"--on-calendar {on_calendar!r}: {proc.stderr.strip() or 'invalid'}")


def install(units: TimerUnits, unit_dir: Path = UNIT_DIR) -> str:
    """Write both units (0644: no secret in them), enable and start the timer; the
    next run as systemd says it."""
    _require_systemd(["etcdsop", "backup", "--keep", "N", "-i", "INVENTORY"])
    for name, text in ((units.service, units.service_text), (units.timer, units.timer_text)):
        path = unit_dir / name
        partial = path.with_name(name + ".part")
        partial.write_text(text)
        partial.chmod(0o644)
        partial.replace(path)
    _systemctl("daemon-reload")
    _systemctl("enable", "--now", units.timer)
    # A changed schedule takes effect on restart only.
    _systemctl("restart", units.timer)
    return _systemctl("show", "-p", "NextElapseUSecRealtime", "--value", units.timer).strip()


def remove(cluster: str, unit_dir: Path = UNIT_DIR) -> list[str]:
    """Stop and disable the timer, delete both units; the names that were removed."""
    name = unit_name(cluster)
    paths = [unit_dir / f"{name}.timer", unit_dir / f"{name}.service"]
    present = [p for p in paths if p.exists()]
    if not present:
        return []
    _require_systemd(["etcdsop"])
    subprocess.run(
        ["systemctl", "disable", "--now", f"{name}.timer", f"{name}.service"],
        capture_output=True,
        timeout=60,
    )
    for path in present:
        path.unlink(missing_ok=True)
    _systemctl("daemon-reload")
    reset = ["systemctl", "reset-failed", f"{name}.service"]
    subprocess.run(reset, capture_output=True, timeout=30)
    return [p.name for p in present]
