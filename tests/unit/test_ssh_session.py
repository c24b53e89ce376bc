"""The SSH session's transport-level behaviour (provider/ssh/session.py): its TCP
connection without Nagle's delay, and how a command's end is heard (`_drain`), on a real
paramiko Channel fed the way its transport feeds it: stdout and stderr into its buffers,
the exit-status request's event, EOF and close. Loopback only."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import paramiko

from provider.ssh.session import _drain, tcp_connection
from provider.ssh.trust import SshTarget


def channel() -> paramiko.Channel:
    return paramiko.Channel(0)  # not active: reading never sends a window adjust


def exit_status(chan: paramiko.Channel, status: int) -> None:
    chan.exit_status = status  # what Channel._handle_request does for "exit-status"
    chan.status_event.set()


def eof(chan: paramiko.Channel) -> None:
    chan._handle_eof(None)  # type: ignore[attr-defined]  # private: what the transport calls


def close(chan: paramiko.Channel) -> None:
    with chan.lock:
        chan._set_closed()  # type: ignore[attr-defined]


def later(*events: tuple[float, Callable[[], None]]) -> threading.Thread:
    """The transport's side: each event after its delay from the start, in a thread."""

    def feed() -> None:
        start = time.monotonic()
        for at, event in events:
            time.sleep(max(0.0, start + at - time.monotonic()))
            event()

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def test_output_that_arrives_after_the_exit_status_is_kept() -> None:
    """OpenSSH may send the exit status before the last of the output (session.c
    session_exit_message): the end is the exit status and EOF, not the status alone."""
    chan = channel()
    later(
        (0.0, lambda: chan.in_buffer.feed(b"first ")),
        (0.02, lambda: exit_status(chan, 0)),
        (0.1, lambda: chan.in_buffer.feed(b"last")),
        (0.1, lambda: chan.in_stderr_buffer.feed(b"warning")),
        (0.12, lambda: eof(chan)),
    )
    out, err, outcome = _drain(chan, time.monotonic() + 30)
    assert (out, err, outcome, chan.recv_exit_status()) == (b"first last", b"warning", "exited", 0)


def test_eof_before_the_exit_status_waits_for_the_status() -> None:
    chan = channel()
    later((0.0, lambda: chan.in_buffer.feed(b"done\n")), (0.0, lambda: eof(chan)), (0.2, lambda: exit_status(chan, 3)))
    out, _, outcome = _drain(chan, time.monotonic() + 30)
    assert (out, outcome, chan.exit_status) == (b"done\n", "exited", 3)


def test_a_daemon_that_keeps_the_output_open_does_not_hold_the_command_to_its_deadline() -> None:
    """The command exited, but a process it started still holds the session's stdout, so
    no EOF comes: the exit status ends it (TRAILING_OUTPUT_WAIT later), not the deadline."""
    chan = channel()
    later((0.0, lambda: chan.in_buffer.feed(b"started\n")), (0.05, lambda: exit_status(chan, 0)))
    started = time.monotonic()
    out, _, outcome = _drain(chan, started + 30)
    assert (out, outcome) == (b"started\n", "exited")
    assert time.monotonic() - started < 15  # far from the 30 s deadline


def test_silence_until_the_deadline_is_a_deadline_and_a_close_without_status_ends_it() -> None:
    chan = channel()
    later((0.0, lambda: chan.in_buffer.feed(b"partial")))
    out, _, outcome = _drain(chan, time.monotonic() + 0.3)
    assert (out, outcome) == (b"partial", "deadline")
    chan = channel()
    later((0.05, lambda: close(chan)))
    out, _, outcome = _drain(chan, time.monotonic() + 30)
    # paramiko reports a closed channel's status as ready (-1): the caller tells a lost
    # connection by it (SshSession._run).
    assert (out, outcome, chan.exit_status) == (b"", "exited", -1)


def test_the_session_s_tcp_connection_sends_small_messages_at_once() -> None:
    """TCP_NODELAY: with Nagle's algorithm on, each of an SSH command's small messages waited
    for the ACK of the one before (up to 40 ms on Linux): 48 ms per command on the lab."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with tcp_connection(SshTarget("127.0.0.1", port, "root", "unused"), timeout=5) as sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
