"""reload -t all with a real Patroni cluster, interrupted after each progress line.

etcd runs on h1-h3; pg-test (Patroni, Pigsty v4.5 layout, h5 primary, h6 replica) and
vip-manager were set up when the cluster had only h1 and h2 (as after `add h3`). Each
case reload rewrites Patroni's etcd3 hosts and vip-manager's endpoints, pauses pg-test,
restarts Patroni replica first, leader last, and resumes.

The reset puts both configs back to h1,h2 and restarts vip-manager on its file (so it
really runs it). Patroni is not restarted (that would cost a second pause and two
restarts per case): its file gets an mtime before its process's start, which is what a
Patroni started on that file leaves on disk, so reload's own rule for which file a
running Patroni read is exercised as if it had (the process runs h1-h3, a superset).

Fault points: reload prints some lines in bursts with no work between them (the per-host
lines of a stage, then the next stage's title). Stopped after any line of a burst, the
process is at the same point (past the burst, at the next remote step), so one case per
burst and signal covers every line of it: each burst's last line is the case (24 lines
in 9 bursts: 18 cases instead of 48, about 7 minutes instead of about 19). This module
runs the harness's pieces (interrupt_after, Writer, record) itself rather than sweep():
its cases check Patroni's pause and restarts too.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e import pgbed
from tests.e2e.conftest import Bed, run_cli
from tests.faults.harness import (
    SIGNALS,
    Figures,
    Harness,
    Writer,
    bursts,
    interrupt_after,
    progress_lines,
    record,
    write_keys,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

CONF = {n: pgbed.instance_conf(pgbed.CLUSTER, n) for n in (1, 2)}
# Per unit: is-active, when its process started, when its config was last written.
AGES = (
    "for u in 'patroni {conf}' 'vip-manager {vip}'; do set -- $u;"
    " pid=$(systemctl show -p MainPID --value $1);"
    " echo $1 $(systemctl is-active $1) $(( $(date +%s) - $(ps -o etimes= -p $pid | tr -d ' ') ))"
    " $(stat -L -c %Y $2); done"
)
# One round trip per host: write both configs (content from stdin), owner and mode as
# pgbed lays them, Patroni's dated before its process started, vip-manager restarted.
RESET = r"""
import json, os, shutil, sys
for path, text, mode, owner in json.load(sys.stdin):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, int(mode, 8))
    shutil.chown(path, *owner.split(":"))
"""


def rest(ip: str) -> dict[str, Any] | None:
    """GET /patroni from the admin node; None when Patroni does not answer."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8008/patroni", timeout=5) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@pytest.fixture
def pg_harness(clean: Bed, tmp_path: Path) -> Iterator[Harness]:
    bed, ips = clean, clean.ips
    pgbed.wipe(bed, ips)
    inv = pgbed.inventory(bed, tmp_path, {ips[0]: 1, ips[1]: 2, ips[2]: 3}, ips[4:6])
    run_cli("create", "-i", str(inv))
    run_cli("rbac", "sync", "-i", str(inv))
    pgbed.provision(bed, inv, ips[4:6], ips[:2])  # set up before h3 joined
    yield Harness(bed, inv, ips[:3])
    pgbed.wipe(bed, ips)


def test_reload_all_converges_after_an_interruption_at_every_step(
    pg_harness: Harness,
) -> None:
    h, bed = pg_harness, pg_harness.bed
    voters, old = bed.ips[:3], bed.ips[:2]
    pg = {1: bed.ips[4], 2: bed.ips[5]}
    primary = pg[1]
    write_keys(h, voters)
    first = {ip: rest(ip) or {} for ip in pg.values()}
    postmasters = {ip: first[ip].get("postmaster_start_time") for ip in pg.values()}
    assert first[primary]["role"] == "master" and all(postmasters.values())
    timeline = first[primary]["timeline"]
    hosts = {f"{v}:2379" for v in voters}
    endpoints = [f"https://{ip}:2379" for ip in sorted(voters)]
    left_paused: list[str] = []

    def each(action: Any) -> list[Any]:
        with ThreadPoolExecutor(max_workers=len(pg)) as pool:
            return list(pool.map(action, pg.items()))

    def reset_host(item: tuple[int, str]) -> None:
        n, ip = item
        files = [
            (
                CONF[n],
                pgbed.patroni_yml(ip, n, old, members=list(pg.values())),
                "640",
                "postgres:postgres",
            ),
            (pgbed.VIP_CONF, pgbed.vip_yml(bed, n, old), "600", "root:postgres"),
        ]
        ages = AGES.format(conf=CONF[n], vip=pgbed.VIP_CONF)
        bed.ssh(
            ip,
            f"python3 -c '{RESET}' && started=$({ages} | awk '$1 == \"patroni\" {{print $3}}')"
            f" && touch -d @$((started - 2)) {CONF[n]} && systemctl restart vip-manager",
            stdin=json.dumps(files),
        )

    def reset() -> None:
        if any((rest(ip) or {}).get("pause") for ip in pg.values()):
            left_paused.append(time.strftime("%H:%M:%S"))
            bed.ssh(primary, f"patronictl -c {pgbed.PATRONI_CONF} resume --wait", timeout=120)
        each(reset_host)

    def check_host(item: tuple[int, str]) -> list[str]:
        n, ip = item
        out = bed.ssh(
            ip,
            f"stat -L -c '%a %U:%G' {pgbed.PATRONI_CONF} {pgbed.VIP_CONF}; readlink"
            f" {pgbed.PATRONI_CONF}; {AGES.format(conf=CONF[n], vip=pgbed.VIP_CONF)};"
            f" echo '#---'; cat {CONF[n]}; echo '#---'; cat {pgbed.VIP_CONF}",
        ).stdout
        head, patroni_text, vip_text = out.split("#---\n")
        rows = head.splitlines()
        modes, link, units = rows[:2], rows[2], rows[3:]
        problems = []
        if modes != ["640 postgres:postgres", "600 root:postgres"] or link != CONF[n]:
            problems.append(f"{ip}: modes or link {modes} {link}")
        for line in units:
            unit, state, started, written = line.split()
            if state != "active" or int(started) < int(written):
                problems.append(f"{ip}: {unit} {state}, started before its config was written")
        try:
            conf, vip = yaml.safe_load(patroni_text), yaml.safe_load(vip_text)
        except yaml.YAMLError as exc:
            return [*problems, f"{ip}: a config is not whole: {exc}"]
        got = set(str(conf["etcd3"]["hosts"]).split(","))
        if got != hosts:
            problems.append(f"{ip}: Patroni's etcd3 hosts {sorted(got)}")
        if vip.get("dcs-endpoints") != endpoints:
            problems.append(f"{ip}: vip-manager's endpoints {vip.get('dcs-endpoints')}")
        doc = rest(ip) or {}
        if doc.get("pause"):
            problems.append(f"{ip}: Patroni left in maintenance mode")
        if doc.get("postmaster_start_time") != postmasters[ip]:
            problems.append(f"{ip}: PostgreSQL restarted ({doc.get('postmaster_start_time')})")
        role = "master" if ip == primary else "replica"
        if (doc.get("role"), doc.get("state")) != (role, "running"):
            problems.append(f"{ip}: {doc.get('role')} {doc.get('state')}, not {role}")
        if ip == primary and doc.get("timeline") != timeline:
            problems.append(f"{ip}: timeline {doc.get('timeline')}, was {timeline}")
        return problems

    def check() -> list[str]:
        problems = h.converged(voters, [], keys=True)
        problems += [p for found in each(check_host) for p in found]
        leader = h.client(voters).get(f"/pg/{pgbed.CLUSTER}/leader")
        if leader != b"pg-test-1":
            problems.append(f"leader key {leader!r}, not pg-test-1")
        return problems

    began = time.monotonic()
    args = ["reload", "-t", "all", "-i", str(h.inventory)]
    lines = progress_lines(args)
    points = bursts(lines)
    reset()
    figures, took = Figures("reload -t all", progress_lines=len(lines)), []
    for signame, sig in SIGNALS:
        for index in points:
            where = f"{signame} after line {index + 1}/{len(lines)} ({lines[index].strip()[:60]})"
            start = time.monotonic()
            with Writer(lambda: h.client(voters)) as writer:
                _code, output = interrupt_after(args, index, sig)
                rerun = h.cli(*args[:-2], "--wait", "60", check=False)
            figures.fault_points += 1
            figures.longest_outage_s = max(figures.longest_outage_s, round(writer.longest, 2))
            problems = []
            if rerun.returncode != 0:
                problems.append(
                    f"re-run exited {rerun.returncode}: {rerun.stderr[-900:]}\n"
                    f"--- interrupted run:\n{output[-900:]}"
                )
            else:
                problems += check()
            lost = h.writes_lost(voters, writer.acked)
            figures.keys_lost = max(figures.keys_lost, lost, h.keys_lost(voters))
            if not writer.acked or lost:
                problems.append(f"writer: {len(writer.acked)} acked, {lost} lost")
            if problems:
                figures.failures.append(f"{where}: {'; '.join(problems)}")
            else:
                figures.converged += 1
            reset()
            took.append(time.monotonic() - start)
    record(figures)
    print(
        f"\nreload sweep: {len(lines)} lines in {len(points)} bursts x 2 signals ="
        f" {figures.fault_points} cases, {figures.converged} converged, keys lost"
        f" {figures.keys_lost}, longest outage {figures.longest_outage_s}s;"
        f" {time.monotonic() - began:.0f}s (a case: median {statistics.median(took):.1f}s);"
        f" left paused after: {left_paused}"
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
    assert figures.keys_lost == 0 and len(points) >= 8
