"""A provider process ends when the Pulumi CLI that started it is gone.

The CLI starts a dynamic provider (`python -m pulumi.dynamic <engine address>`) in a
process group of its own (pulumi/pulumi sdk/go/common/resource/plugin/plugin.go,
`cmdutil.RegisterProcessGroup`) and kills it when the command ends. A CLI killed with
SIGKILL cannot, and the SDK's server then waits forever (pulumi/dynamic/__main__.py:
`Event().wait()`), so a master's provisioning would go on beside the user's next `pulumi
up`. Here: the engine's address is probed every few seconds; once it refuses, the call in
flight stops at its next step boundary (its progress line cannot reach the CLI: a
BrokenPipeError from provider.core.progress) and the process exits as soon as no call is
in flight. Every step is checked again by the next `up` (docs/failures.md).
"""

from __future__ import annotations

import os
import socket
import sys
import threading

PROBE_EVERY = 2.0  # seconds between probes of the engine's address
REFUSALS = 2  # consecutive refusals that mean the CLI is gone

_lock = threading.Lock()
_in_flight = 0
_started = False
gone = threading.Event()


def engine_address(argv: list[str]) -> tuple[str, int] | None:
    """The engine's host:port the CLI passes a provider plugin as its one argument."""
    if len(argv) < 2:
        return None
    host, _, port = argv[1].rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=PROBE_EVERY):
            return True
    except OSError:
        return False


def _watch(address: tuple[str, int]) -> None:
    refused = 0
    while not gone.is_set():
        refused = 0 if _answers(address) else refused + 1
        if refused >= REFUSALS:
            gone.set()
            _exit_if_idle()
        gone.wait(PROBE_EVERY)


def _exit_if_idle() -> None:
    with _lock:
        if gone.is_set() and _in_flight == 0:
            os._exit(0)


def start() -> None:
    """Watch the engine (once per process; only in a plugin the CLI started)."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
    address = engine_address(sys.argv)
    if address is not None:
        threading.Thread(target=_watch, args=(address,), name="engine-watch", daemon=True).start()


def enter() -> None:
    global _in_flight
    start()
    with _lock:
        _in_flight += 1


def leave() -> None:
    global _in_flight
    with _lock:
        _in_flight -= 1
    _exit_if_idle()
