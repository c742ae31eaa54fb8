"""Pure edits of the etcd clients' configs (Patroni, vip-manager), comments preserved.

No YAML round trip: that would drop comments and reformat the file. Instead a
line-based editor replaces only the top-level blocks we own (`etcd3:` in
patroni.yml; six keys in vip-manager.yml) and leaves every other byte as it was.
PyYAML guards both ends: a file that does not parse is refused, and the result
must parse to exactly the old document with only our keys changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from etcdsop.errors import ClusterError

# Patroni picks one DCS from its config: another DCS section beside etcd3 is ambiguous.
OTHER_DCS = ("etcd", "consul", "zookeeper", "exhibitor", "kubernetes", "raft")
VIP_KEYS = (
    "dcs-endpoints",
    "etcd-user",
    "etcd-password",
    "etcd-ca-file",
    "etcd-cert-file",
    "etcd-key-file",
)
MASK = "******"

# A top-level mapping key at column 0: plain, or single/double quoted.
_KEY_RE = re.compile(
    r"""^(?P<key>"[^"]*"|'[^']*'|[^\s#'"\-?:,\[\]{}&*!|>%@`][^:#]*?)\s*:(?=\s|$)"""
)
_SECRET_LINE = re.compile(
    r"""(?i)^(?P<lead>[-+ ]?\s*(?:-\s+)?["']?[\w.-]*(?:password|passwd|secret|token)[\w.-]*["']?"""
    r"""\s*:\s*)\S.*$"""
)

_SECRET_FLOW = re.compile(
    r"""(?i)(?P<lead>[{,]\s*["']?[\w.-]*(?:password|passwd|secret|token)[\w.-]*["']?\s*:\s*)"""
    r"""(?P<value>'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^,}\s][^,}]*?)(?=\s*[,}]|\s*$)"""
)

# No ':' or ',' (host:port lists stay quoted, as Pigsty writes them), no leading digit
# or '-' (numbers), none of the words some YAML parser (Go's too) reads as bool or null.
_PLAIN_RE = re.compile(r"[A-Za-z_./@][A-Za-z0-9_./@-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# URLs plain too, as Pigsty writes vip-manager's dcs-endpoints.
_URL_RE = re.compile(r"https?://[A-Za-z0-9.\[\]:-]+(?:/[A-Za-z0-9._/-]*)?")


class ClientConfError(ClusterError):
    """A client config we must not edit (missing, unparseable, ambiguous)."""


@dataclass(frozen=True)
class EtcdAccess:
    """How one PostgreSQL cluster's clients reach etcd."""

    hosts: tuple[str, ...]  # "ip:port" of the live voters
    cacert: str
    cert: str
    key: str
    username: str
    password: str | None  # None: keep the one the file has (its change is not due)

    def patroni_etcd3(self) -> dict[str, str | None]:
        """The `etcd3:` keys reload owns, as Patroni reads them (Pigsty's shape)."""
        return {
            "hosts": ",".join(self.hosts),
            "protocol": "https",
            "cacert": self.cacert,
            "cert": self.cert,
            "key": self.key,
            "username": self.username,
            "password": self.password,
        }

    def vip_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "dcs-endpoints": [f"https://{h}" for h in self.hosts],
            "etcd-user": self.username,
            "etcd-password": self.password,
            "etcd-ca-file": self.cacert,
            "etcd-cert-file": self.cert,
            "etcd-key-file": self.key,
        }
        return {k: v for k, v in settings.items() if v is not None}


# -- public edits ---------------------------------------------------------------------
# Every etcd3 key reload does not own (key_password, use_proxies, retry_timeout...)
# and every comment inside the section is kept as the file has it.
# Ways to name the endpoints that would win over `hosts`: editing hosts would change nothing.
_ENDPOINT_KEYS = ("url", "proxy", "srv", "srv_suffix")


def edit_patroni(
    content: bytes,
    etcd3: Mapping[str, Any],
    *,
    scope: str,
    namespace: str,
    citus_group: int | None = None,
) -> bytes:
    """patroni.yml with the owned keys of its `etcd3:` section set; unchanged if already so.

    Only the lines of the keys that change are rewritten (alignment after the colon and
    a trailing comment kept); a missing key is appended to the section. `hosts` keeps the
    file's form: one "ip:port,ip:port" string (Pigsty) or a list. A value None in etcd3
    means "leave that key as the file has it".
    Refuses (ClientConfError) a file whose scope/namespace would put Patroni's keys
    outside the prefix its etcd user may write: Patroni would lose its leader lock.
    """
    text, doc = parse_config(content)
    check_patroni(doc, scope=scope, namespace=namespace, citus_group=citus_group)
    section = dict(doc.get("etcd3") or {})
    used = [k for k in _ENDPOINT_KEYS if k in section]
    if used:
        raise ClientConfError(
            f"its etcd3 section names its endpoints with {used[0]}: (etcdsop edits hosts only)"
        )
    changes: dict[str, Any] = {}
    for key, value in etcd3.items():
        if value is None:
            continue
        if key == "hosts":
            value = _hosts_form(section.get("hosts"), value)
        if section.get(key) != value:
            changes[key] = value
    if not changes:
        return content
    lines = text.splitlines(keepends=True)
    found = top_level_blocks(lines).get("etcd3", [])
    if len(found) != 1:
        raise ClientConfError("its etcd3: section is not a plain top-level block; left as it was")
    block = found[0]
    eol = _eol(text)
    body = lines[block.start + 1 : block.end]
    if _flow_value(lines[block.start]):
        # etcd3: {..} on one line: rewritten as a block with every key it had.
        header = _header(lines[block.start], "etcd3", eol)
        merged = {**section, **changes}
        body = [f"  {k}: {_flow_scalar(v)}{eol}" for k, v in merged.items()]
        new_lines = [*lines[: block.start], header, *body, *lines[block.end :]]
    else:
        indent = _body_indent(body) or "  "
        new_body = _set_children(body, changes, indent, eol)
        new_lines = [*lines[: block.start], lines[block.start], *new_body, *lines[block.end :]]
    new = "".join(new_lines)
    _verify(doc, new, {"etcd3": {**section, **changes}})
    return new.encode()


def _hosts_form(old: Any, hosts: Any) -> Any:
    """The new hosts in the form the file uses: a list stays a list, else one string."""
    items = list(hosts) if isinstance(hosts, (list, tuple)) else str(hosts).split(",")
    return items if isinstance(old, list) else ",".join(items)


def _flow_value(line: str) -> str:
    match = _KEY_RE.match(line)
    rest = line[match.end() :].strip() if match else ""
    return "" if rest.startswith("#") else rest


def _flow_scalar(value: Any) -> str:
    if isinstance(value, str):
        return yaml_scalar(value)
    if isinstance(value, list):
        return "[" + ", ".join(_flow_scalar(v) for v in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


_CHILD_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*)(?P<gap>\s*):(?P<space>[ \t]*)")


def _set_children(
    body: Sequence[str], changes: Mapping[str, Any], indent: str, eol: str
) -> list[str]:
    """The section's lines with each changed child key's line(s) replaced or appended."""
    spans: dict[str, tuple[int, int]] = {}
    for i, line in enumerate(body):
        match = _CHILD_RE.match(line)
        if match and match.group("indent") == indent:
            end = i + 1
            while end < len(body) and _deeper(body[end], indent):
                end += 1
            spans[match.group("key")] = (i, end)
    out = list(body)
    appended: list[str] = []
    for key, value in sorted(changes.items(), key=lambda kv: -spans.get(kv[0], (-1, 0))[0]):
        if key in spans:
            start, end = spans[key]
            out[start:end] = _child_lines(body[start:end], key, value, indent, eol)
        else:
            appended += _child_lines([], key, value, indent, eol)
    if appended:
        # After the section's last value line: trailing blank/comment lines stay after it.
        last = max((i for i, line in enumerate(out) if line.strip()), default=-1)
        while last >= 0 and out[last].lstrip().startswith("#"):
            last -= 1
        if last >= 0 and not out[last].endswith("\n"):
            out[last] += eol
        out[last + 1 : last + 1] = appended
    return out


def _deeper(line: str, indent: str) -> bool:
    """A continuation of the child above: more indented, or a sequence item at its level."""
    if not line.strip():
        return False
    lead = line[: len(line) - len(line.lstrip(" "))]
    return len(lead) > len(indent) or line.lstrip(" ").startswith("- ")


def _child_lines(old: Sequence[str], key: str, value: Any, indent: str, eol: str) -> list[str]:
    """`key: value` keeping the old line's spacing and trailing comment where it had one."""
    gap, comment = " ", ""
    if old:
        match = _CHILD_RE.match(old[0])
        assert match is not None
        gap = match.group("space") or " "
        comment = _trailing_comment(old[0][match.end() :].rstrip("\r\n"))
    head = f"{indent}{key}:"
    if isinstance(value, list):
        flow = bool(old) and old[0][len(head) :].strip().startswith("[")
        if flow:
            return [f"{head}{gap}{_flow_scalar(value)}{comment}{eol}"]
        items = [f"{indent}  - {yaml_scalar(str(v))}{eol}" for v in value]
        return [f"{head}{comment}{eol}", *items]
    return [f"{head}{gap}{yaml_scalar(str(value))}{comment}{eol}"]


def _trailing_comment(rest: str) -> str:
    """The ` # comment` after a scalar value, found where the value still parses alone."""
    for at in range(len(rest)):
        if rest[at] == "#" and at > 0 and rest[at - 1] in " \t":
            try:
                yaml.safe_load("k: " + rest[:at])
            except yaml.YAMLError:
                continue
            cut = len(rest[:at].rstrip(" \t"))
            return rest[cut:]
    return ""


def check_patroni(
    doc: Mapping[str, Any], *, scope: str, namespace: str, citus_group: int | None = None
) -> None:
    etcd3 = doc.get("etcd3")
    if "etcd3" not in doc:
        raise ClientConfError("has no etcd3: section (etcdsop edits an existing one only)")
    if etcd3 is not None and not isinstance(etcd3, dict):
        raise ClientConfError("its etcd3: section is not a mapping")
    others = [k for k in OTHER_DCS if k in doc]
    if others:
        raise ClientConfError(
            f"has a {others[0]}: section besides etcd3: (Patroni would use only one of them)"
        )
    source = "pg_cluster" if citus_group is None else "pg_shard"
    if str(doc.get("scope", "")) != scope:
        raise ClientConfError(
            f"scope is {doc.get('scope')!r}, not the inventory's {source} {scope!r}"
        )
    citus = doc.get("citus")
    group = citus.get("group") if isinstance(citus, dict) else None
    if citus_group is not None and group != citus_group:
        raise ClientConfError(
            f"citus.group is {group!r}, not the inventory's pg_group {citus_group} (pg_mode citus)"
        )
    if citus_group is None and citus is not None:
        raise ClientConfError("has a citus: section but the inventory's pg_mode is not citus")
    # Patroni's own default namespace is /service; it always appends a slash.
    have = str(doc.get("namespace") or "/service").rstrip("/")
    if have != namespace.rstrip("/"):
        raise ClientConfError(
            f"namespace is {have!r}, not the inventory's pg_namespace {namespace!r}: its "
            "etcd user could not write its keys"
        )


def edit_vip(content: bytes, settings: Mapping[str, Any], *, readable: str = "") -> bytes:
    """vip-manager.yml with the keys of settings replaced (or appended when missing).

    readable: the key prefix its etcd user may read; a trigger-key outside it is refused
    (vip-manager could not read its key and would drop the VIP, its unit still active).
    """
    text, doc = parse_config(content)
    dcs_type = doc.get("dcs-type", "etcd")
    if dcs_type not in ("etcd", "etcd3"):
        raise ClientConfError(f"dcs-type is {dcs_type!r}, not etcd (or etcd3)")
    trigger = str(doc.get("trigger-key") or "")
    if readable and not trigger.startswith(readable):
        raise ClientConfError(
            f"trigger-key is {trigger!r}, outside {readable} (all its etcd user may read)"
        )
    changes = {k: v for k, v in settings.items() if doc.get(k) != v}
    if not changes:
        return content
    lines = text.splitlines(keepends=True)
    eol = _eol(text)
    blocks = top_level_blocks(lines)
    replaced: dict[int, tuple[int, list[str]]] = {}
    appended: list[str] = []
    for key, value in changes.items():
        found = blocks.get(key, [])
        if len(found) > 1:
            raise ClientConfError(f"key {key} appears {len(found)} times")
        if found:
            block = found[0]
            body = lines[block.start + 1 : block.end]
            rendered = _render_key(key, value, _seq_indent(body), eol, lines[block.start])
            replaced[block.start] = (block.end, rendered)
        else:
            appended += _render_key(key, value, "  ", eol, None)
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in replaced:
            end, rendered = replaced[i]
            out += rendered
            i = end
        else:
            out.append(lines[i])
            i += 1
    if appended:
        # Before a closing document end marker (`...`, as Pigsty's template ends).
        end = len(out)
        while end > 0 and (not out[end - 1].strip() or out[end - 1].startswith("#")):
            end -= 1
        if end > 0 and out[end - 1].rstrip("\r\n") == "...":
            end -= 1
        else:
            end = len(out)
        if end > 0 and not out[end - 1].endswith("\n"):
            out[end - 1] += eol
        out[end:end] = appended
    new = "".join(out)
    _verify(doc, new, changes)
    return new.encode()


# -- line machinery -------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """Lines [start, end) of one top-level key: its header line and its value's lines.

    Blank lines and column-0 comments at the end belong to what follows, not to it.
    """

    key: str
    start: int
    end: int


def top_level_blocks(lines: Sequence[str]) -> dict[str, list[Block]]:
    starts: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if _ends_block(line):
            match = _KEY_RE.match(line)
            key = match.group("key").strip("'\"") if match else ""
            starts.append((i, key))
    blocks: dict[str, list[Block]] = {}
    for n, (start, key) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        while end > start + 1 and _is_trailer(lines[end - 1]):
            end -= 1
        if key:
            blocks.setdefault(key, []).append(Block(key, start, end))
    return blocks


def _ends_block(line: str) -> bool:
    """A line at column 0 that starts something new (key, document marker...)."""
    if not line.strip() or line[0] in " \t#":
        return False
    # A block sequence may sit at column 0 under its key ("key:\n- a\n- b").
    return not (line.startswith("- ") or line.rstrip("\r\n") == "-")


def _is_trailer(line: str) -> bool:
    return not line.strip() or line.startswith("#")


def _eol(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _header(line: str, key: str, eol: str) -> str:
    """Keep `key:` with its comment; a value on the header line (flow map) goes."""
    match = _KEY_RE.match(line)
    assert match is not None
    rest = line[match.end() :].strip()
    comment = f"  {rest}" if rest.startswith("#") else ""
    return f"{match.group('key')}:{comment}{eol}"


def _body_indent(body: Sequence[str]) -> str:
    for line in body:
        if line.strip() and not line.lstrip().startswith("#"):
            return line[: len(line) - len(line.lstrip(" "))]
    return ""


def _seq_indent(body: Sequence[str]) -> str:
    """How the old value's sequence items were indented ("" for column 0)."""
    for line in body:
        stripped = line.lstrip(" ")
        if stripped.startswith("- ") or stripped.rstrip("\r\n") == "-":
            return line[: len(line) - len(stripped)]
    return "  "


def _render_key(key: str, value: Any, indent: str, eol: str, old_header: str | None) -> list[str]:
    head = old_header if old_header is not None else f"{key}:"
    match = _KEY_RE.match(head)
    spelled = match.group("key") if match else key
    if isinstance(value, list):
        return [f"{spelled}:{eol}"] + [f"{indent}- {yaml_scalar(str(v))}{eol}" for v in value]
    return [f"{spelled}: {yaml_scalar(str(value))}{eol}"]


def yaml_scalar(value: str) -> str:
    """Plain when that reads back as the same string (https, paths, names), else quoted:
    small diffs against hand-written or Pigsty-rendered files."""
    plain = _PLAIN_RE.fullmatch(value) or _URL_RE.fullmatch(value)
    if plain and value.lower() not in _YAML_WORDS:
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return yaml_quote(value)


def yaml_quote(value: str) -> str:
    """A single-quoted YAML scalar: every one-line string survives it verbatim."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ClientConfError("a value holds a control character")
    return "'" + value.replace("'", "''") + "'"


# -- parsing and verification ---------------------------------------------------------
def parse_config(content: bytes) -> tuple[str, dict[str, Any]]:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientConfError(f"is not UTF-8 text (byte {exc.start})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ClientConfError(f"is not valid YAML{line}: {problem}") from None
    if not isinstance(doc, dict):
        kind = "empty" if doc is None else f"a {type(doc).__name__}, not a mapping"
        raise ClientConfError(f"is {kind}")
    lines = text.splitlines(keepends=True)
    for key, found in top_level_blocks(lines).items():
        if len(found) > 1:
            raise ClientConfError(f"key {key} appears {len(found)} times")
    return text, doc


def _verify(old: Mapping[str, Any], new_text: str, changes: Mapping[str, Any]) -> None:
    """The edit must parse to the old document with exactly `changes` applied."""
    try:
        new = yaml.safe_load(new_text)
    except yaml.YAMLError as exc:
        raise ClientConfError(f"editing it would break its YAML ({exc}); left as it was") from None
    expected = {**old, **changes}
    if new != expected:
        differ = sorted(
            str(k) for k in set(expected) | set(new or {}) if (new or {}).get(k) != expected.get(k)
        )
        raise ClientConfError(
            f"its layout is too unusual to edit safely (would change {', '.join(differ)}); "
            "left as it was"
        )


# -- secrets --------------------------------------------------------------------------
def mask_secrets(text: str, secrets: Sequence[str] = ()) -> str:
    """Hide password-like values and every known secret in a diff or config text."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = _SECRET_LINE.match(body)
        if match:
            line = match.group("lead") + MASK + line[len(body) :]
        # Flow style (`etcd3: {..., password: x}`): each password-like value up to , or }.
        line = _SECRET_FLOW.sub(lambda m: m.group("lead") + MASK, line)
        out.append(line)
    masked = "".join(out)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    return masked
