"""Exception types callers handle. Every message says what happened, where, and what
the user can do; none carries a secret (SshSession masks them in command output)."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from provider.core import engine_watch

AGAIN = "then run `pulumi up` again: finished steps are checked and skipped, nothing is done twice."


class ProviderError(Exception):
    """Base of every error this project's providers raise on purpose. A kind whose cause
    is the same whichever step meets it says what to do in `advice` (else the step does)."""

    advice = ""


class SshUnreachableError(ProviderError):
    advice = (
        "the SSH connection to the host was lost or refused: check that the host is up and its sshd answers with "
        "the pinned host key (a command cut off there is stopped on the host at its deadline); " + AGAIN
    )


class HostKeyMismatchError(ProviderError):
    advice = (
        "the host did not prove the pinned SSH host key, so nothing was sent to it. If the host was rebuilt on "
        "purpose, put its new key in the stack config (`ssh-keyscan -t ed25519 <host>`, compared out of band); "
        "otherwise treat it as someone else answering at that address."
    )


class PrivateKeyError(ProviderError):
    advice = (
        "give the SSH private key itself (the text of an unencrypted Ed25519, ECDSA or RSA key, "
        "`-----BEGIN OPENSSH PRIVATE KEY-----` ...), set as a secret: `pulumi config set --secret`, or a key file "
        "named in the stack config."
    )


class ForeignAgentError(ProviderError):
    """The host already runs a Puppet agent configured for someone else."""

    advice = (
        "this host's Puppet agent is not one this stack installed: decommission it first (PE requires a host "
        "without an agent), or if it is this very master, healthy and already in PE, set `adopt: true` for it; "
        "check the host and pe_version in the stack config, then run `pulumi up` again."
    )


class AvailabilityGroupError(ProviderError):
    """A compiler's peadm availability group does not fit the console's PE Compiler Group A/B."""

    advice = (
        "set availabilityGroup (A or B) for the master in pe:compileMasters on an install built with peadm, or "
        "unset it on one without; nothing was changed on the host, the CA or the console. Then run `pulumi up` again."
    )


class SanMismatchError(ProviderError):
    """A pending CSR asks for other SANs than requested: never sign someone else's CSR."""

    advice = (
        "the certificate request or certificate on the CA is not the one this stack asked for, so it was not "
        "signed or used; find out who made it (`puppetserver ca list --all`), clean it on the CA if it is stale, "
        "then run `pulumi up` again."
    )


class CaRefusedError(ProviderError):
    """The CA would not sign (e.g. allow-subject-alt-names is off)."""

    advice = (
        "the CA refused to sign: with DNS alt names it must allow them (`allow-subject-alt-names: true` in the "
        "certificate-authority section of the CA's puppetserver conf.d, then reload pe-puppetserver), and with "
        "extensions `allow-authorization-extensions`; " + AGAIN
    )


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


class Failed(Exception):  # noqa: N818 - the word the user reads first
    """The cause and what to do, as the user reads them first. The SDK answers a failed call
    with `traceback.format_exc()` (pulumi/dynamic/__main__.py, `_abort_with_traceback`),
    which prints an exception's cause before its frames, and a cause that was never raised
    has no frames: so the CLI's error begins `Failed: <what, where> What to do: ...`."""


# `Failed: ...`, not `provider.core.errors.Failed: ...` (traceback leaves out the module
# of builtins' types).
Failed.__module__ = "builtins"
AFTER_THE_CAUSE = "the cause and what to do are above"


class ProviderFailure(Exception):  # noqa: N818 - the name the user reads in the engine's output
    """What reaches the engine: raised from a `Failed` that carries the message, so the
    message comes first and the frames after it are the SDK's and the boundary's only (the
    frames below the boundary stay out); its own line points back up to the message, which
    `message` holds."""

    def __init__(self, message: str) -> None:
        super().__init__(AFTER_THE_CAUSE)
        self.message = message


def user_message(exc: BaseException) -> str:
    """The text a user reads for a failure: ours say what, where and what to do; anything
    else is a bug of ours, named with the place it happened."""
    if isinstance(exc, StepFailedError):
        return str(exc)
    if isinstance(exc, ProviderError):
        text = str(exc).strip() or type(exc).__name__
        return f"{text}\nWhat to do: {exc.advice}" if exc.advice and "What to do:" not in text else text
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}" if frames else ""
    return (
        f"unexpected {type(exc).__name__}{where}: {exc}\n"
        "What to do: this is a bug in pe-compile-masters (nothing more is known); report it with this message. "
        "What was done before it is checked and skipped when `pulumi up` runs again."
    )


def brief_message(exc: BaseException) -> str:
    """user_message in two lines (what and where; what to do), for a list of failures such
    as CompileMasterBatch's: the command output each carries would bury the others."""
    lines = user_message(exc).splitlines()
    advice = next((line for line in lines if line.startswith("What to do:")), "")
    return lines[0] + (f"\n  {advice}" if advice and advice != lines[0] else "") if lines else type(exc).__name__


F = TypeVar("F", bound=Callable[..., Any])


def at_boundary(method: F) -> F:
    """A provider method as the engine calls it: any failure leaves as one ProviderFailure
    with the user's message, its cause cut off (`from None`)."""

    @functools.wraps(method)
    def boundary(*args: Any, **kwargs: Any) -> Any:
        engine_watch.enter()
        try:
            return method(*args, **kwargs)
        except ProviderFailure:
            raise
        except Exception as exc:  # every failure leaves through here
            message = user_message(exc)
        finally:
            engine_watch.leave()
        raise ProviderFailure(message) from Failed(message)

    return boundary  # type: ignore[return-value]
