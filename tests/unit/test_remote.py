"""Pure parts of the SSH transport."""

from __future__ import annotations

import pytest

from etcdsop.remote import _sudo_refused


@pytest.mark.parametrize(
    ("stderr", "refused"),
    [
        ("sudo: a password is required\n", True),
        ("sudo: ops is not in the sudoers file.  This incident will be reported.\n", True),
        ("Sorry, user ops is not allowed to execute '/bin/sh' as root on h.\n", False),
        ("sudo: user ops is not allowed to execute 'sh' as root\n", True),
        ("etcdctl: context deadline exceeded\n", False),
        ("", False),
        ("warning\nsudo: a password is required\n", False),  # only sudo's own first line
    ],
)
def test_sudo_refusal_is_recognised_from_its_first_line(stderr: str, refused: bool) -> None:
    assert _sudo_refused(stderr) is refused
