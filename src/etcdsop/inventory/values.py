"""Converters from raw inventory values to typed ones: ints, ports, bools, names, paths.

A converter raises `_Bad` when it refuses a value; `_EXPECT` says, per key, what
would have been accepted. Reporting is done by checks.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from etcdsop.datadir import data_dir_problem

_INT_RE = re.compile(r"[+-]?[0-9]+")
_ETCD_NAME_RE = re.compile(r"[A-Za-z0-9-]+")
_PG_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
# etcd_data goes into etcd.conf, the systemd unit and `rm -rf`: keep it plain.
_DATA_DIR_RE = re.compile(r"/[A-Za-z0-9._@+/-]*")
_DAYS_RE = re.compile(r"([0-9]+)d?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Ansible's own boolean spellings (module_utils.parsing.convert_bool).
_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})
_MAX_ELECTION_MS = 50000  # etcd refuses a longer --election-timeout
# etcd only warns above 8 GiB (MaxQuotaBytes, "suggested"); 100 GiB is a sanity bound.
# Below 1 MiB a member's own bookkeeping would fill it.
_MIN_QUOTA = 1024**2
_MAX_QUOTA = 100 * 1024**3

_EXPECT = {
    "etcd_seq": "an integer >= 0, unique in the etcd group",
    "etcd_cluster": "letters, digits and '-', the same on every member",
    "etcd_data": "an absolute directory path other than /, of letters, digits and ._@+-",
    "etcd_port": "an integer 1..65535",
    "etcd_peer_port": "an integer 1..65535",
    "etcd_init": "new or existing",
    "etcd_election_timeout": f"milliseconds, an integer 1..{_MAX_ELECTION_MS}",
    "etcd_heartbeat_interval": "milliseconds, a positive integer",
    "etcd_root_password": "a non-empty one-line string, the same on every member",
    "cert_validity": "days, as 7300d or 7300",
    "etcd_quota_backend_bytes": f"bytes, an integer {_MIN_QUOTA}..{_MAX_QUOTA} (8589934592: 8 GiB)",
    "pg_cluster": "letters, digits, '-' and '_'",
    "pg_namespace": "an etcd key prefix starting with /, the same on every host of the cluster",
    "pg_etcd_password": "a one-line string, the same on every host of the cluster",
    "ansible_host": "a host name or address",
    "ansible_user": "a user name",
    "ansible_ssh_private_key_file": "a path",
    "ansible_ssh_common_args": "ssh options; StrictHostKeyChecking yes, accept-new, no or off",
}
_BOOLEAN_KEYS = (
    "etcd_learner",
    "etcd_safeguard",
    "etcd_rm_data",
    "etcd_rm_pkg",
    "etcd_client_cert_auth",
    "pg_vip_enabled",
)
_EXPECT.update(dict.fromkeys(_BOOLEAN_KEYS, "true or false"))
# Ansible's legacy spellings of the connection vars mean the same thing.
_EXPECT.update(
    ansible_port=_EXPECT["etcd_port"],
    ansible_ssh_port=_EXPECT["etcd_port"],
    ansible_ssh_host=_EXPECT["ansible_host"],
    ansible_ssh_user=_EXPECT["ansible_user"],
    ansible_private_key_file=_EXPECT["ansible_ssh_private_key_file"],
    ansible_ssh_extra_args=_EXPECT["ansible_ssh_common_args"],
)


def _normal_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _ip_order(ip: str) -> tuple[int, int]:
    address = ipaddress.ip_address(ip)
    return (address.version, int(address))


class _Bad(Exception):
    """A converter refused a value; `problem` replaces the default 'is <value>'."""

    def __init__(self, problem: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem


def _to_int(value: object) -> int:
    if isinstance(value, bool):  # YAML `yes` is a bool, never a number
        raise _Bad()
    if isinstance(value, int):
        return value
    # Ansible templates "3" into 3 where an int is needed; accept digit strings too.
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value)
    raise _Bad()


def _in_range(low: int, high: int | None) -> Callable[[object], int]:
    def convert(value: object) -> int:
        number = _to_int(value)
        if number < low or (high is not None and number > high):
            raise _Bad()
        return number

    return convert


_to_seq = _in_range(0, None)
_to_port = _in_range(1, 65535)
_to_election = _in_range(1, _MAX_ELECTION_MS)
_to_heartbeat = _in_range(1, None)
_to_quota = _in_range(_MIN_QUOTA, _MAX_QUOTA)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE  # a string "false" must not be truthy
    raise _Bad()


def _to_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad()
    return str(value)


def _to_line(value: object) -> str:
    text = _to_text(value)
    if _CONTROL_RE.search(text):
        raise _Bad("has a line break or control character")
    return text


def _matching(pattern: re.Pattern[str]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = _to_text(value)
        if not pattern.fullmatch(text):
            raise _Bad()
        return text

    return convert


_to_etcd_name = _matching(_ETCD_NAME_RE)
_to_pg_name = _matching(_PG_NAME_RE)


def _to_init(value: object) -> str:
    if value not in ("new", "existing"):
        raise _Bad()
    return str(value)


def _to_data_dir(value: object) -> str:
    text = _to_text(value)
    parts = text.split("/")
    if not _DATA_DIR_RE.fullmatch(text) or ".." in parts or text.strip("/") == "":
        raise _Bad()
    problem = data_dir_problem(text.rstrip("/"))
    if problem:
        raise _Bad(problem)
    return text.rstrip("/")


def _to_password(value: object) -> str:
    text = _to_line(value)
    if not text:
        raise _Bad("is empty (etcd does not support empty passwords)")
    return text


def _to_namespace(value: object) -> str:
    text = _to_line(value)
    if not text.startswith("/"):
        raise _Bad()
    return text


def _to_days(value: object) -> int:
    # Pigsty writes "7300d"; a bare integer means days too.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Bad()
    match = _DAYS_RE.fullmatch(str(value).strip())
    if not match or int(match.group(1)) < 1:
        raise _Bad()
    return int(match.group(1))
