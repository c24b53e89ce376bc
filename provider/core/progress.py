"""What every dynamic resource here shares at its edges: progress lines and its inputs.

Progress lines go to stderr as `[<resource name>] <step>: <message> (+<elapsed>s)`: the
CLI shows a dynamic provider's output live but does not say which resource printed it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pulumi

Log = Callable[[str, str], None]


_emit_lock = threading.Lock()


def emit(line: str) -> None:
    """One whole line to stderr: print() writes the text and the newline separately, so
    the batch's threads could interleave their lines."""
    with _emit_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def progress(resource_name: str) -> Log:
    started = time.monotonic()

    def log(step: str, message: str) -> None:
        emit(f"[{resource_name}] {step}: {message} (+{time.monotonic() - started:.1f}s)")

    return log


def resource_inputs(
    name: str, props: dict[str, Any], secret_keys: Iterable[str], output_keys: Iterable[str]
) -> dict[str, Any]:
    """A dynamic Resource's input dict: its name (for progress lines), the secret inputs
    wrapped as Pulumi secrets (the engine keeps an output secret under the same key), and
    each output declared so the engine knows it."""
    args: dict[str, Any] = {"resource_name": name, **props}
    for key in secret_keys:
        if args.get(key) is not None:
            args[key] = pulumi.Output.secret(args[key])
    args.update({k: None for k in output_keys if k not in args})
    return args


def without_provider(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k != "__provider"}
