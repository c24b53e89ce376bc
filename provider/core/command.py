"""A remote command's result, and the error a failed one raises: plain values (host,
command as run with secrets masked, exit status, output), below the SSH session that
produces them and the steps that read them, so neither imports the other's floor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from provider.core.errors import ProviderError


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str  # as run, with secrets masked
    exit_status: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 15) -> str:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()
        return "\n".join(text.splitlines()[-lines:])

    def expect(self, ok: Iterable[int], step: str, hint: str = "") -> CommandResult:
        if self.exit_status not in tuple(ok):
            raise RemoteCommandError(self, step, hint)
        return self

    def check(self, step: str, hint: str = "") -> CommandResult:
        return self.expect((0,), step, hint)


class RemoteCommandError(ProviderError):
    def __init__(self, result: CommandResult, step: str, hint: str = ""):
        self.result = result
        self.step = step
        message = f"[{result.host}] step '{step}' failed: `{result.command}` exited {result.exit_status}" + (
            f" - {hint}" if hint else ""
        )
        tail = result.tail()
        if tail:
            message += "\n--- last output ---\n" + tail
        super().__init__(message)
