"""Exception types callers handle. Every message says what happened, where, and what
the user can do; none carries a secret (SshSession masks them in command output)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provider.ssh import CommandResult


class ProviderError(Exception):
    """Base of every error this project's providers raise on purpose."""


class SshUnreachableError(ProviderError):
    pass


class HostKeyMismatchError(ProviderError):
    pass


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


class ForeignAgentError(ProviderError):
    """The host already runs a Puppet agent configured for someone else."""


class SanMismatchError(ProviderError):
    """A pending CSR asks for other SANs than requested: never sign someone else's CSR."""


class CaRefusedError(ProviderError):
    """The CA would not sign (e.g. allow-subject-alt-names is off)."""


class ClassifierError(ProviderError):
    pass


class DeadlineError(ProviderError):
    pass


class StepFailedError(ProviderError):
    """A step of an operation failed. Names the host and the step, says what to do, and
    keeps the cause chained (its type shows in the engine's traceback)."""

    def __init__(self, host: str, step: str, cause: BaseException, advice: str):
        self.host = host
        self.step = step
        self.advice = advice
        text = str(cause).strip() or type(cause).__name__
        if host not in text or f"'{step}'" not in text:
            own = f"[{host}] "
            text = f"[{host}] step '{step}' failed: {text[len(own) :] if text.startswith(own) else text}"
        self.summary = text.splitlines()[0]
        super().__init__(f"{text}\nWhat to do: {advice}")
