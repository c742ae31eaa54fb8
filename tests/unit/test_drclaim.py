"""The claim scripts of a DR run, run by a real sh on a file in a temp dir."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from etcdsop.errors import GuardRefused
from etcdsop.ops.drclaim import _CLAIM, _RELEASE, DrClaim, claim_id


def _sh(script: str, *args: str) -> str:
    done = subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_claim_is_made_once_kept_by_its_owner_and_refused_to_another(tmp_path: Path) -> None:
    claim = str(tmp_path / "run" / "dr-claim")
    mine = "a1 recover from admin:/srv/files since 2026-12-03T22:00:00Z"
    assert _sh(_CLAIM, claim, "a1", mine) == "new"
    assert _sh(_CLAIM, claim, "a1", mine) == "ours"
    theirs = "b2 restore from other:/x since 2026-12-03T22:01:00Z"
    assert _sh(_CLAIM, claim, "b2", theirs) == f"other {mine}"
    # An id that is a prefix of the owner's is not the owner.
    assert _sh(_CLAIM, claim, "a", "a x").startswith("other ")
    _sh(_RELEASE, claim, "b2")  # another's release leaves the claim alone
    assert Path(claim).read_text() == mine + "\n"
    _sh(_RELEASE, claim, "a1")
    assert not Path(claim).exists()
    _sh(_RELEASE, claim, "a1")  # nothing to release: still fine
    assert _sh(_CLAIM, claim, "b2", theirs) == "new"
    assert sorted(p.name for p in Path(claim).parent.iterdir()) == ["dr-claim"]


def test_an_empty_claim_file_is_nobody_s_to_take_over(tmp_path: Path) -> None:
    """A claim is linked into place whole; a file found empty (truncated by hand) is
    not taken for ours, and a release leaves it."""
    claim = tmp_path / "dr-claim"
    claim.write_text("")
    assert _sh(_CLAIM, str(claim), "a1", "a1 x") == "other (an empty claim file)"
    _sh(_RELEASE, str(claim), "a1")
    assert claim.exists()


def test_the_claim_id_is_the_admin_directory(tmp_path: Path) -> None:
    assert claim_id(tmp_path / "files") == claim_id(tmp_path / "." / "files")
    assert claim_id(tmp_path / "files") != claim_id(tmp_path / "other" / "files")


def test_a_claim_that_cannot_be_written_fails_rather_than_naming_nobody(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("a file where the directory should be")
    done = subprocess.run(
        ["sh", "-c", _CLAIM, "sh", str(tmp_path / "run" / "dr-claim"), "a1", "a1 x"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "cannot create" in done.stderr


class _Host:
    """A host whose claim script answers as given; records what was run on it."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.ran: list[str] = []

    def run(self, argv: list[str], timeout: float) -> SimpleNamespace:
        self.ran.append("release" if argv[2] == _RELEASE else "claim")
        return SimpleNamespace(stdout=self.answer + "\n")


class _Ctx:
    def __init__(self, files: Path, answers: dict[str, str]) -> None:
        self.inventory = SimpleNamespace(files_dir=files)
        self.hosts = {ip: _Host(a) for ip, a in answers.items()}
        self.report = SimpleNamespace(warn=lambda message: None)

    def host(self, member: SimpleNamespace) -> _Host:
        return self.hosts[member.ip]

    def parallel(self, members: list[SimpleNamespace], action: Any) -> dict[str, object]:
        return {m.ip: action(m) for m in members}


THEIRS = "0123456789abcdef recover from other:/srv/files since 2026-12-03T22:00:00Z"


@pytest.mark.parametrize(
    ("resuming", "said", "released"),
    [(False, "nothing was changed", True), (True, "hosts may be mid-change", False)],
)
def test_a_refused_claim_names_the_holder_and_what_this_run_did(
    tmp_path: Path, resuming: bool, said: str, released: bool
) -> None:
    ctx = _Ctx(tmp_path, {"10.0.0.1": "new", "10.0.0.2": f"other {THEIRS}"})
    members = [SimpleNamespace(ip=ip) for ip in ctx.hosts]
    claim = DrClaim(ctx, "recover", resuming=resuming)  # type: ignore[arg-type]
    with pytest.raises(GuardRefused) as refused, claim.until_first_change(members):  # type: ignore[arg-type]
        raise AssertionError("the block must not run when a host is claimed by another")
    text = refused.value.message
    assert "10.0.0.2: another disaster-recovery run" in text
    assert "(recover from other:/srv/files since 2026-12-03T22:00:00Z)" in text
    assert said in text
    # Not resuming: this run's claims are taken back (the script removes ours only).
    assert ctx.hosts["10.0.0.1"].ran == (["claim", "release"] if released else ["claim"])


def test_an_unexpected_answer_refuses_the_claim(tmp_path: Path) -> None:
    ctx = _Ctx(tmp_path, {"10.0.0.1": "new", "10.0.0.2": "sudo: a password is required"})
    claim = DrClaim(ctx, "restore", resuming=False)  # type: ignore[arg-type]
    with pytest.raises(GuardRefused, match=r"10\.0\.0\.2: could not claim the host for restore"):
        claim.take([SimpleNamespace(ip=ip) for ip in ctx.hosts])  # type: ignore[misc]
