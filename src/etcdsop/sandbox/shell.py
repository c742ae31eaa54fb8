"""Shell commands as root on sandbox hosts, through the sandbox's own ssh key.

The sandbox's hosts are ours and throwaway: a command here is one string for the
remote shell, and secrets may travel on stdin (never on the command line).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .state import SandboxPaths, ssh_argv


@dataclass
class Shell:
    """ssh to the hosts of one sandbox (its state dir's key and known_hosts)."""

    paths: SandboxPaths

    def ssh(
        self,
        ip: str,
        command: str,
        *,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` on ip; check: raise CalledProcessError on a non-zero exit."""
        return subprocess.run(
            [*ssh_argv(self.paths, ip), command],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def each(self, ips: Sequence[str], command: str) -> dict[str, str]:
        """The same command on every host at once; their stdout by IP."""
        with ThreadPoolExecutor(max_workers=len(ips) or 1) as pool:
            outs = pool.map(lambda ip: self.ssh(ip, command).stdout, ips)
        return dict(zip(ips, outs, strict=True))

    def put(self, ip: str, path: str, content: str | bytes, mode: str, owner: str) -> None:
        """Write a file (its directory made), then its mode and owner."""
        text = content.decode() if isinstance(content, bytes) else content
        script = f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}"
        self.ssh(ip, f"{script} && chown {owner} {path}", stdin=text)
