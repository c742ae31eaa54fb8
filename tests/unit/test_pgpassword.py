"""The order of a password change across a cluster's hosts (reload_pg_hosts), with the
per-host work replaced by a recorder: write everything, change the password, reload at
once; or, when a host cannot take it, change nothing anywhere."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from etcdsop.clients import password as pgpassword
from etcdsop.clients import reload as clients_reload
from etcdsop.clients.jobs import plan_jobs
from etcdsop.clients.reload import reload_pg_hosts
from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.events import SilentReporter
from etcdsop.model import Inventory, PgCluster, SshTarget
from etcdsop.ops.outcomes import HostOutcome, ReloadResult
from etcdsop.ops.rbac import Action, PgAccount, accounts

HOSTS = ("10.0.0.5", "10.0.0.6")


def cluster(vip: bool = True) -> PgCluster:
    return PgCluster(
        name="pg-test",
        group="pg-test",
        hosts=HOSTS,
        namespace="/pg",
        etcd_password="New.Pw",
        vip_enabled=vip,
        host_vars={h: {} for h in HOSTS},
        ssh={h: SshTarget(h) for h in HOSTS},
    )


class Recorder:
    """Stands for PgHost: records what reload_pg_hosts asks of each host, in order."""

    log: ClassVar[list[str]] = []
    broken: ClassVar[set[str]] = set()

    def __init__(self, ctx: Any, host: Any, job: Any, *_: Any) -> None:
        self.job, self.node = job, None
        self.failures: dict[str, str] = {}
        self.outcomes: list[HostOutcome] = []

    def _say(self, what: str) -> None:
        Recorder.log.append(f"{self.job.ip} {what}")

    def prepare(self) -> None:
        if self.job.ip in Recorder.broken:
            self.failures["patroni"] = "is not valid YAML"

    def keep_password(self, why: str) -> None:
        self._say("keep password")

    def write(self, *, reload: bool) -> None:
        self._say(f"write reload={reload}")
        self.outcomes = [HostOutcome("patroni", self.job.ip, "changed", "wrote")]

    def revert(self) -> None:
        self._say("revert")

    def note_all(self, message: str) -> None:
        self._say("failed: " + message)

    def reload_now(self) -> None:
        self._say("reload now")

    def check_vip(self) -> None:
        pass

    def fail_all(self, message: str) -> None:
        self._say("fail " + message)


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setattr(clients_reload, "PgHost", Recorder)
    Recorder.log, Recorder.broken = [], set()
    (tmp_path / "ca.crt").write_bytes(b"CA")
    return SimpleNamespace(
        options=SimpleNamespace(forks=1, dry_run=False),
        report=SilentReporter(),
        pki=SimpleNamespace(ca_cert_path=tmp_path / "ca.crt"),
        remote=lambda ip, ssh: None,
    )


def run(ctx: Any, change: Any) -> ReloadResult:
    inv = Inventory(path=Path("/x/pigsty.yml"), members=(), pg_clusters=(cluster(),))
    (account,) = accounts(inv)
    result = ReloadResult(("patroni", "vip"), False)
    jobs = plan_jobs(inv, ("patroni", "vip"))
    password = [(account, Action("change_password", "update"))]
    reload_pg_hosts(ctx, jobs, [account], ["https://10.0.0.1:2379"], result, "S", password, change)
    return result


def test_written_everywhere_then_changed_then_reloaded_at_once(ctx: Any) -> None:
    def change(item: Any) -> None:
        Recorder.log.append("etcd: password changed")

    result = run(ctx, change)
    assert Recorder.log == [
        "10.0.0.5 write reload=False",
        "10.0.0.6 write reload=False",
        "etcd: password changed",
        "10.0.0.5 reload now",
        "10.0.0.6 reload now",
    ]
    assert set(result.password_windows) == {"pg-test"}


def test_a_host_that_cannot_take_it_keeps_the_password_everywhere(ctx: Any) -> None:
    Recorder.broken = {"10.0.0.6"}

    def change(item: Any) -> None:
        raise AssertionError("must not be changed")

    result = run(ctx, change)
    assert Recorder.log == [
        "10.0.0.5 keep password",
        "10.0.0.6 keep password",
        "10.0.0.5 write reload=True",
        "10.0.0.6 write reload=True",
    ]
    assert result.password_windows == {}


def test_etcd_refusing_the_change_restores_the_files(ctx: Any) -> None:
    def change(item: Any) -> None:
        raise ClusterError("etcdserver: permission denied")

    run(ctx, change)
    assert Recorder.log[2:4] == ["10.0.0.5 revert", "10.0.0.6 revert"]
    assert "reload now" not in " ".join(Recorder.log)
    assert all("files restored" in line for line in Recorder.log[4:])


@pytest.mark.parametrize(
    ("vip", "targets", "refused"),
    [
        (True, ("patroni",), True),
        (True, ("vip",), True),
        (True, ("patroni", "vip"), False),
        (False, ("patroni",), False),
        (True, (), True),  # rbac sync alone
    ],
)
def test_guard(vip: bool, targets: tuple[str, ...], refused: bool) -> None:
    inv = Inventory(path=Path("/x/pigsty.yml"), members=(), pg_clusters=(cluster(vip),))
    change = [(PgAccount("pg-test", "/pg", "New.Pw", False), Action("change_password", "x"))]
    if refused:
        need = "patroni,vip" if vip else "patroni"
        with pytest.raises(GuardRefused, match=f"etcdsop reload -t {need}"):
            pgpassword.guard(inv, change, targets)
    else:
        pgpassword.guard(inv, change, targets)
