"""How the core reports progress without printing: the CLI passes a Reporter."""

from __future__ import annotations

from typing import Literal, Protocol

Status = Literal["ok", "changed", "skipped", "failed", "info", "start"]


class Reporter(Protocol):
    def phase(self, title: str) -> None:
        """A new step that concerns every host (connect, gather, launch...)."""

    def host(self, host: str, message: str, status: Status = "ok") -> None:
        """One host's outcome for the current step."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def command(self, host: str, command: str) -> None:
        """A command about to run on a host (shown with -v; secrets are never in it)."""


class SilentReporter:
    """For tests and library callers that want no output."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.lines: list[str] = []

    def phase(self, title: str) -> None:
        self.lines.append(f"== {title}")

    def host(self, host: str, message: str, status: Status = "ok") -> None:
        self.lines.append(f"{host}: {status}: {message}")

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def command(self, host: str, command: str) -> None:
        pass
