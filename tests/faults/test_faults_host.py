"""Host and network faults during add, rm and create: etcd killed on a member, a
member's peer traffic dropped (nftables in its network namespace), the SSH connection
to a host cut during apply, the joining member's data dir full (a small tmpfs).

Each case: a writer puts a key every 50 ms; the command runs and the fault strikes
right after a chosen progress line; what the command did is checked while the fault
lasts (it ends on its own, within its bounded waits, and never costs quorum); the
fault is healed; the same command is run again and must leave the cluster as the
inventory says, with every acknowledged write readable.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import yaml
from tests.faults.harness import Figures, Harness, Writer, fault_after, record, write_keys

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

# The longest a write may wait while a member is killed or cut off: a leader election
# and the client moving to another member, never a lost quorum (etcd's election
# timeout here is 1 s; a lost quorum refuses writes until the fault is healed).
MAX_OUTAGE = 5.0


def nft(ip: str, harness: Harness, rules: str, check: bool = True) -> None:
    """nftables inside one sandbox host's network namespace (not the machine's)."""
    netns = f"etcdsop{ip.split('.')[2]}-h{harness.bed.ips.index(ip) + 1}"
    argv = ["ip", "netns", "exec", netns, "nft", rules]
    subprocess.run(argv, check=check, capture_output=not check)


def drop_peer_traffic(harness: Harness, ip: str) -> None:
    rules = (
        "add table inet fault; "
        "add chain inet fault input { type filter hook input priority 0; }; "
        "add chain inet fault output { type filter hook output priority 0; }; "
        "add rule inet fault input tcp dport 2380 drop; "
        "add rule inet fault input tcp sport 2380 drop; "
        "add rule inet fault output tcp dport 2380 drop; "
        "add rule inet fault output tcp sport 2380 drop"
    )
    nft(ip, harness, rules)


def heal_network(harness: Harness, ip: str) -> None:
    """Traffic back, then wait (bounded) until `status` says healthy, as an operator
    would: the member back from the partition has its log to catch up."""
    nft(ip, harness, "delete table inet fault")
    deadline = time.monotonic() + 60
    while harness.cli("status", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the cluster is not healthy 60 s after healing"
        time.sleep(1)


@pytest.fixture(autouse=True)
def healed_afterwards(harness: Harness) -> Iterator[None]:
    """A failed case never leaves a host cut off or a tmpfs mounted for the next one."""
    yield
    for ip in harness.ips:
        nft(ip, harness, "delete table inet fault", check=False)
    harness.bed.each(harness.ips, "umount /data/etcd 2>/dev/null; true")


def run_case(
    harness: Harness,
    name: str,
    args: list[str],
    *,
    after: str,
    inject: Callable[[], None],
    while_faulted: Callable[[int, str], list[str]],
    heal: Callable[[], None],
    voters_after: list[str],
    absent_after: list[str],
    writer_ips: list[str],
) -> Figures:
    """One fault: strike, check what the command did, heal, re-run, check convergence."""
    figures = Figures(name, fault_points=1)
    problems: list[str] = []
    marks: dict[str, float] = {}

    def strike() -> None:
        marks["the fault"] = time.monotonic()
        inject()

    with Writer(lambda: harness.client(writer_ips)) as writer:
        code, output = fault_after([*args, "-i", str(harness.inventory)], after, strike)
        marks["the first run's end"] = time.monotonic()
        if "Traceback" in output:
            problems.append("a traceback")
        problems += while_faulted(code, output)
        ending = [line for line in output.splitlines() if line.startswith("error:")]
        figures.first_run = f"exit {code}" + (f": {ending[-1][:300]}" if ending else "")
        marks["the heal"] = time.monotonic()
        heal()
        marks["the re-run"] = time.monotonic()
        rerun = harness.cli(*args, "--wait", "60", check=False)
    figures.longest_outage_s = round(writer.longest, 2)
    figures.longest_outage_began = writer.when_longest_began(marks)
    if rerun.returncode != 0:
        problems.append(f"re-run exited {rerun.returncode}: {rerun.stderr[-800:]}")
    else:
        problems += harness.converged(voters_after, absent_after)
    figures.keys_lost = harness.keys_lost(voters_after) + harness.writes_lost(
        voters_after, writer.acked
    )
    if figures.keys_lost or not writer.acked:
        problems.append(f"writer: {len(writer.acked)} acked; keys lost: {figures.keys_lost}")
    if writer.longest > MAX_OUTAGE:
        problems.append(
            f"writes stalled {writer.longest:.1f}s ({writer.when_longest_began(marks)}): "
            "quorum lost?"
        )
    if problems:
        figures.failures.append(f"{'; '.join(problems)}\n--- first run (exit {code}):\n{output}")
    else:
        figures.converged = 1
    record(figures)
    return figures


def members_now(harness: Harness, ips: list[str]) -> list[tuple[str, bool]]:
    """(peer URL, is learner) of every member, through the given members."""
    return sorted((m.peer_urls[0], m.is_learner) for m in harness.client(ips).member_list())


def three(harness: Harness) -> list[str]:
    ips = harness.ips
    harness.cli("create", "-l", ",".join(ips[:3]))
    write_keys(harness, ips[:3])
    return ips


def as_before(harness: Harness, ips: list[str]) -> list[str]:
    """The member list is the three voters it was (a failed add leaves nothing)."""
    got = members_now(harness, ips)
    want = sorted((f"https://{ip}:2380", False) for ip in ips)
    return [] if got == want else [f"members while faulted: {got}"]


@pytest.mark.parametrize(
    ("after", "when"),
    [
        ("added as learner", "learner announced"),
        ("started, healthy learner", "learner started"),
        ("promoted .* to voter", "just promoted"),
    ],
)
def test_add_with_etcd_killed_on_a_member(harness: Harness, after: str, when: str) -> None:
    ips = three(harness)
    victim = ips[1]

    def inject() -> None:
        harness.bed.ssh(victim, "systemctl kill -s KILL etcd")

    def while_faulted(code: int, output: str) -> list[str]:
        return [] if code in (0, 4) else [f"exit {code}"]

    figures = run_case(
        harness,
        f"add, etcd killed on a member ({when})",
        ["add", ips[3], "-y"],
        after=after,
        inject=inject,
        while_faulted=while_faulted,
        heal=lambda: harness.bed.ssh(victim, "systemctl start etcd"),
        voters_after=ips,
        absent_after=[],
        writer_ips=ips[:3],
    )
    assert figures.failures == [], "\n\n".join(figures.failures)


def test_add_with_a_members_peer_traffic_dropped(harness: Harness) -> None:
    ips = three(harness)
    cut = ips[1]

    def while_faulted(code: int, output: str) -> list[str]:
        # Two of three voters answer: adding a fourth now would need three of four.
        if code == 0:
            return []
        return [] if cut in output or "quorum" in output else [f"exit {code} unexplained"]

    figures = run_case(
        harness,
        "add, a member's peer traffic dropped",
        ["add", ips[3], "-y", "--timeout", "20", "--promote-timeout", "30"],
        after="connected",
        inject=lambda: drop_peer_traffic(harness, cut),
        while_faulted=while_faulted,
        heal=lambda: heal_network(harness, cut),
        voters_after=ips,
        absent_after=[],
        writer_ips=[ips[0], ips[2]],
    )
    assert figures.failures == [], "\n\n".join(figures.failures)


def test_add_with_the_joiners_peer_traffic_dropped(harness: Harness) -> None:
    ips = three(harness)

    def while_faulted(code: int, output: str) -> list[str]:
        problems = [] if code == 4 else [f"exit {code}, not 4 (rolled back)"]
        return problems + as_before(harness, ips[:3])

    figures = run_case(
        harness,
        "add, the joiner's peer traffic dropped",
        ["add", ips[3], "-y", "--timeout", "15", "--promote-timeout", "20"],
        after="applied",
        inject=lambda: drop_peer_traffic(harness, ips[3]),
        while_faulted=while_faulted,
        heal=lambda: heal_network(harness, ips[3]),
        voters_after=ips,
        absent_after=[],
        writer_ips=ips[:3],
    )
    assert figures.failures == [], "\n\n".join(figures.failures)


@pytest.mark.parametrize("cut_index", [3, 1], ids=["the removed member", "another member"])
def test_rm_with_peer_traffic_dropped(harness: Harness, cut_index: int) -> None:
    ips = harness.ips
    harness.cli("create", "-l", ",".join(ips))
    write_keys(harness, ips)
    cut = ips[cut_index]

    def while_faulted(code: int, output: str) -> list[str]:
        return [] if code in (0, 3) else [f"exit {code}"]

    figures = run_case(
        harness,
        f"rm, peer traffic of {'the removed member' if cut_index == 3 else 'another member'} "
        "dropped",
        ["rm", ips[3], "-y"],
        after="lock held",
        inject=lambda: drop_peer_traffic(harness, cut),
        while_faulted=while_faulted,
        heal=lambda: heal_network(harness, cut),
        voters_after=ips[:3],
        absent_after=[ips[3]],
        writer_ips=[ip for ip in ips[:3] if ip != cut],
    )
    assert figures.failures == [], "\n\n".join(figures.failures)


def test_a_member_back_from_a_partition_does_not_depose_the_leader(harness: Harness) -> None:
    """etcd.conf sets pre-vote (3.4 has it off): a follower cut off from its peers for
    several election timeouts asks before it campaigns, so its term stays put and, back,
    it leaves the leader and the term as they were. Without it the heal costs an
    election and every client's writes stall while it lasts."""
    ips = three(harness)
    c = harness.client(ips)
    before = c.status(f"https://{ips[0]}:2379")
    follower = next(ip for ip in ips if c.status(f"https://{ip}:2379").member_id != before.leader)
    drop_peer_traffic(harness, follower)
    time.sleep(4)  # several 1 s election timeouts: without pre-vote it campaigns each time
    heal_network(harness, follower)
    back = c.status(f"https://{follower}:2379")
    after = c.status(f"https://{ips[0]}:2379")
    assert (after.leader, after.raft_term) == (before.leader, before.raft_term)
    assert (back.leader, back.raft_term) == (before.leader, before.raft_term)


def test_create_with_the_ssh_connection_cut_during_apply(harness: Harness) -> None:
    ips = harness.ips[:3]
    harness.cli("create", "-l", ",".join(ips))
    write_keys(harness, ips)
    old = harness.bed.ssh(ips[1], "cat /etc/etcd/etcd.conf").stdout
    doc = yaml.safe_load(harness.inventory.read_text())
    doc["all"]["children"]["etcd"]["vars"]["etcd_heartbeat_interval"] = 150
    harness.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))

    def inject() -> None:
        # Every sshd session on the host dies: our connection ends mid-command.
        harness.bed.ssh(ips[1], "pkill -KILL -f 'sshd: root@notty'", check=False)

    def while_faulted(code: int, output: str) -> list[str]:
        problems = [] if code != 0 else ["create succeeded though its connection was cut"]
        conf = harness.bed.ssh(ips[1], "cat /etc/etcd/etcd.conf").stdout
        if conf != old and "heartbeat-interval: 150" not in conf:
            problems.append("etcd.conf on the cut host is neither old nor new")
        return problems

    figures = run_case(
        harness,
        "create, SSH connection cut during apply",
        ["create", "-l", ",".join(ips)],
        after="── apply",
        inject=inject,
        while_faulted=while_faulted,
        heal=lambda: None,
        voters_after=ips,
        absent_after=[],
        writer_ips=ips,
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
    for conf in harness.bed.each(ips, "cat /etc/etcd/etcd.conf").values():
        assert "heartbeat-interval: 150" in conf


def test_add_with_the_joiners_data_dir_full(harness: Harness) -> None:
    ips = three(harness)
    mount = "mkdir -p /data/etcd && mount -t tmpfs -o size=8m,mode=0700 tmpfs /data/etcd"
    harness.bed.ssh(ips[3], mount)

    def while_faulted(code: int, output: str) -> list[str]:
        problems = [] if code == 4 else [f"exit {code}, not 4 (rolled back)"]
        if "no space left on device" not in output:
            problems.append("the reason (no space left on device) is not shown")
        if "rolled back, member list as before" not in output:
            problems.append("no clean rollback")
        return problems + as_before(harness, ips[:3])

    figures = run_case(
        harness,
        "add, the joiner's data dir full",
        ["add", ips[3], "-y"],
        after="added as learner",
        inject=lambda: None,  # full from the start: etcd cannot write its WAL
        while_faulted=while_faulted,
        heal=lambda: harness.bed.ssh(ips[3], "umount /data/etcd"),
        voters_after=ips,
        absent_after=[],
        writer_ips=ips[:3],
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
