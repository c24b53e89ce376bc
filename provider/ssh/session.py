"""SSH sessions: the only code in the providers that talks SSH (paramiko).

Trust is pinned: the host key comes from an input (`ssh-ed25519 AAAA...` or known_hosts
text) and any other key is refused with HostKeyMismatchError. One session per
host per operation; every command has a deadline; results never raise on exit status -
callers choose strictness with `check()`/`expect()`, and errors name the host, the step,
the command, the exit status and the last lines of output, with secrets masked.
"""

from __future__ import annotations

import io
import os
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from provider.core.command import CommandResult, RemoteCommandError
from provider.core.errors import (
    HostKeyMismatchError,
    PrivateKeyError,
    ProviderError,
    SshUnreachableError,
)
from provider.core.progress import emit
from provider.ssh.deadline import DEADLINE_EXIT_STATUSES, with_deadline
from provider.ssh.trust import SshTarget, host_key_blob, host_key_lines

if TYPE_CHECKING:
    import paramiko

# Seconds between the remote deadline's TERM and KILL, and the extra time we wait to hear
# the exit status after the deadline.
REMOTE_KILL_GRACE = 10.0
# Waiting on a channel: data, EOF and close wake the wait at once (the channel's pipe);
# POLL_MAX bounds each wait, so an exit status that comes with nothing else is heard
# within it. TRAILING_OUTPUT_WAIT: how long, after the exit status, to wait for the end of
# the output, which OpenSSH may still be sending (session.c session_exit_message: "there
# could be some more data waiting in the pipe"); a daemon the command started that kept
# its output open would otherwise hold the channel until the deadline.
POLL_MAX = 0.1
TRAILING_OUTPUT_WAIT = 0.5


def with_remote_deadline(line: str, timeout: float) -> str:
    """Run `line` under a deadline in the user's login shell, so a command past its deadline
    is stopped on the host too (its whole process group), not just abandoned by us: a lost
    connection or a deadline must not leave `puppet agent` or a CSR loop running there
    (provider.ssh.deadline: timeout(1), or Perl where coreutils has none)."""
    return with_deadline(line, timeout, REMOTE_KILL_GRACE)


def load_private_key(pem: str) -> paramiko.PKey:
    import paramiko  # here, not at the top: a preview (check, diff) never connects, and pays no import

    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(pem))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise PrivateKeyError("the SSH private key is not an unencrypted Ed25519, ECDSA or RSA key in PEM/OpenSSH form")


def parse_host_key(line: str) -> paramiko.PKey:
    """'ssh-ed25519 AAAA... [comment]' -> a public key paramiko can compare."""
    import paramiko

    kind, blob = host_key_blob(line)
    return paramiko.PKey.from_type_string(kind, blob)


def host_keys_for(target: SshTarget) -> list[paramiko.PKey]:
    """The keys this target may present, as paramiko compares them."""
    return [parse_host_key(line) for line in host_key_lines(target)]


def pinned_policy(target: SshTarget, allowed: Sequence[paramiko.PKey]) -> paramiko.MissingHostKeyPolicy:
    """Accept exactly the pinned keys; anything else is a HostKeyMismatchError."""
    import paramiko

    class PinnedPolicy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            for pinned in allowed:
                if pinned.get_name() == key.get_name() and pinned.asbytes() == key.asbytes():
                    return
            expected = ", ".join(f"{k.get_name()} {k.fingerprint}" for k in allowed)
            raise HostKeyMismatchError(
                f"{target.label}: the host key it presented ({key.get_name()} {key.fingerprint}) is not the "
                f"pinned one ({expected}); a different machine may be answering this address"
            )

    return PinnedPolicy()


def tcp_connection(target: SshTarget, timeout: float) -> socket.socket:
    """The TCP connection an SSH session runs on, with Nagle's algorithm off (TCP_NODELAY,
    as OpenSSH sets for interactive sessions): an SSH exchange is small messages written
    back to back (channel open, exec, EOF; the key exchange's), and with Nagle on each
    waits for the previous one's ACK, which Linux delays up to 40 ms. Measured on the lab:
    a command's round trip 48 -> 6 ms, a connection 70 -> 28 ms; the same CPU."""
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def open_client(target: SshTarget, connect_deadline: float) -> paramiko.SSHClient:
    """A connected paramiko client that accepts only the target's pinned host keys, retried
    until connect_deadline passes (a refused login is not retried)."""
    import paramiko

    allowed = host_keys_for(target)
    if not allowed:
        raise HostKeyMismatchError(f"{target.label}: no pinned host key and no known_hosts entry for it")
    pkey = load_private_key(target.private_key)
    deadline = time.monotonic() + connect_deadline
    attempt = 0
    while True:
        attempt += 1
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(pinned_policy(target, allowed))
        remaining = max(1.0, deadline - time.monotonic())
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                pkey=pkey,
                sock=tcp_connection(target, min(10.0, remaining)),
                timeout=min(10.0, remaining),
                banner_timeout=min(10.0, remaining),
                auth_timeout=min(10.0, remaining),
                look_for_keys=False,
                allow_agent=False,
            )
            return client
        except HostKeyMismatchError:
            client.close()
            raise
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SshUnreachableError(
                f"{target.label}: SSH login as {target.user} was refused ({exc}); "
                "check the private key and that its public key is in the user's authorized_keys"
            ) from None
        except (OSError, paramiko.SSHException) as exc:
            client.close()
            if time.monotonic() >= deadline:
                raise SshUnreachableError(
                    f"{target.label}: cannot open SSH after {attempt} attempts in "
                    f"{connect_deadline:.0f}s ({type(exc).__name__}: {exc})"
                ) from None
            time.sleep(min(1.0 * attempt, 5.0))


class SshSession:
    """One SSH connection for the length of a resource operation. Threads may share it:
    each command is a channel of its own, at most `max_channels` at once (sshd's
    MaxSessions defaults to 10 per connection)."""

    def __init__(
        self, target: SshTarget, connect_deadline: float = 30.0, secrets: Sequence[str] = (), max_channels: int = 8
    ):
        self.target = target
        self.connect_deadline = connect_deadline
        self.secrets = [s for s in secrets if s]
        self.client: paramiko.SSHClient | None = None
        self.channels = threading.BoundedSemaphore(max_channels)

    def __enter__(self) -> SshSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        self.client = open_client(self.target, self.connect_deadline)
        if os.environ.get("PE_COMPILE_MASTERS_TRACE"):  # counted by bench/ (connections per host)
            emit(f"[trace] ssh-connect {self.target.label}")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text

    def run(self, command: str | Sequence[str], timeout: float = 600.0, stdin: bytes | None = None) -> CommandResult:
        """Run a command (a list is quoted with shlex.join) with a deadline."""
        with self.channels:
            return self._run(command, timeout, stdin)

    def _run(self, command: str | Sequence[str], timeout: float, stdin: bytes | None) -> CommandResult:
        import paramiko

        assert self.client is not None, "not connected"
        line = command if isinstance(command, str) else shlex.join(command)
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshUnreachableError(f"{self.target.label}: the SSH connection dropped before `{self.mask(line)}`")
        try:
            chan = transport.open_session(timeout=30)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise SshUnreachableError(
                f"{self.target.label}: connection lost before `{self.mask(line)}`: {exc or type(exc).__name__}"
            ) from None
        chan.settimeout(timeout + REMOTE_KILL_GRACE)
        started = time.monotonic()
        try:
            chan.exec_command(with_remote_deadline(line, timeout))
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            # The host enforces the deadline itself (timeout(1) kills the command's process
            # group); we wait a little longer to hear its exit status.
            out, err, outcome = _drain(chan, started + timeout + REMOTE_KILL_GRACE)
            if outcome == "deadline":
                raise RemoteCommandError(
                    self._result(line, -1, out, err), "run", f"no result within its {timeout:.0f}s deadline"
                )
            if outcome == "lost":
                raise SshUnreachableError(f"{self.target.label}: connection lost during `{self.mask(line)}`")
            status = chan.recv_exit_status()
            if status == -1 and not transport.is_active():  # closed without an exit status: sshd is gone
                raise SshUnreachableError(f"{self.target.label}: connection lost during `{self.mask(line)}`")
            if status in DEADLINE_EXIT_STATUSES and time.monotonic() - started >= timeout:
                raise RemoteCommandError(
                    self._result(line, status, out, err),
                    "run",
                    f"no result within its {timeout:.0f}s deadline; the host stopped it",
                )
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            raise SshUnreachableError(
                f"{self.target.label}: connection lost during `{self.mask(line)}`: {exc}"
            ) from None
        finally:
            chan.close()
        return self._result(line, status, out, err)

    def _result(self, line: str, status: int, out: bytes, err: bytes) -> CommandResult:
        """What a command did, every part with the session's secrets masked."""
        text = (self.mask(out.decode(errors="replace")), self.mask(err.decode(errors="replace")))
        return CommandResult(self.target.label, self.mask(line), status, *text)

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        import paramiko

        assert self.client is not None, "not connected"
        tmp = f"{path}.pe-compile-masters.tmp"
        try:
            with self.channels, self.client.open_sftp() as sftp:
                with sftp.file(tmp, "wb") as f:
                    f.write(data)
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, path)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._sftp_error("write", path, exc) from None

    def get(self, path: str) -> bytes | None:
        import paramiko

        assert self.client is not None, "not connected"
        try:
            with self.channels, self.client.open_sftp() as sftp, sftp.file(path, "rb") as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._sftp_error("read", path, exc) from None

    def _sftp_error(self, verb: str, path: str, exc: BaseException) -> ProviderError:
        """paramiko's SFTP errors carry neither host nor path; a dead connection is
        SshUnreachableError like everywhere else."""
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            return SshUnreachableError(f"{self.target.label}: connection lost while trying to {verb} {path} over SFTP")
        return ProviderError(f"[{self.target.label}] cannot {verb} {path} over SFTP: {exc or type(exc).__name__}")


def _drain(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes, str]:
    """A running command's stdout and stderr until it has ended ("exited": its exit status
    and the end of its output are in, or TRAILING_OUTPUT_WAIT has passed since the status)
    or the deadline passes ("deadline"). paramiko reports a closed channel's status as ready
    (-1), so a dropped connection ends as "exited" and SshSession._run tells it by that;
    "lost" only if a paramiko did not. It waits on the channel, not on a timer, so a short
    command is heard when it ends."""
    import select

    out, err = bytearray(), bytearray()

    def take() -> None:
        while chan.recv_ready():
            out.extend(chan.recv(65536))
        while chan.recv_stderr_ready():
            err.extend(chan.recv_stderr(65536))

    status_at: float | None = None
    waiter = select.poll()
    waiter.register(chan.fileno(), select.POLLIN)  # paramiko's pipe: data on either stream, EOF, close
    while True:
        take()
        ended = chan.eof_received or chan.closed
        now = time.monotonic()
        if chan.exit_status_ready():
            status_at = now if status_at is None else status_at
            if ended or now - status_at >= TRAILING_OUTPUT_WAIT:
                take()  # what came in since the first take (nothing comes after EOF)
                return bytes(out), bytes(err), "exited"
        elif chan.closed:
            return bytes(out), bytes(err), "lost"
        if now > deadline:
            return bytes(out), bytes(err), "deadline"
        wait = min(deadline - now, POLL_MAX if status_at is None else TRAILING_OUTPUT_WAIT - (now - status_at))
        if ended:  # the pipe stays readable after EOF: wait for the exit status itself
            chan.status_event.wait(max(wait, 0.001))
        else:
            waiter.poll(max(1, int(wait * 1000)))


@contextmanager
def remote_lock(session: SshSession, path: str, timeout: float, step: str) -> Iterator[None]:
    """Hold an exclusive flock(1) on `path` on the session's host for the `with` block.

    The lock lives in a process of its own SSH channel: closing the channel (or losing
    the connection, or this process dying) ends it, so a crash never leaves it held."""
    assert session.client is not None, "not connected"
    transport = session.client.get_transport()
    if transport is None or not transport.is_active():
        raise SshUnreachableError(f"{session.target.label}: the SSH connection dropped before {step}")
    chan = transport.open_session(timeout=30)
    quoted = shlex.quote(path)
    chan.exec_command(
        f'mkdir -p "$(dirname {quoted})" && '
        f"exec flock -w {int(timeout)} {quoted} sh -c 'echo locked; exec cat >/dev/null'"
    )
    got = bytearray()
    deadline = time.monotonic() + timeout + 10
    try:
        while b"locked\n" not in got:
            if chan.recv_ready():
                got += chan.recv(1024)
            elif chan.exit_status_ready() or time.monotonic() > deadline:
                raise ProviderError(
                    f"[{session.target.label}] {step}: could not take the lock {path} within {timeout:.0f}s "
                    "(another change to this host is still running; retry when it is done)"
                )
            else:
                time.sleep(0.02)
        yield
    finally:
        chan.shutdown_write()
        chan.close()
