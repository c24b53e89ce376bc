"""The provider of Pulumi's own lifecycle tests (pkg/engine/lifecycletest/
delete_before_replace_test.go), as a dynamic provider: a change of input `A` replaces the
resource, delete-before-replace when the input `dbr_diff` says so. Each create and delete
is appended to the file `journal`, so tests see what really ran, in order. Importable (not
in a test file): the provider server unpickles providers by reference.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import Any

from pulumi import Input, Output, ResourceOptions, dynamic


def _journal(props: dict[str, Any], event: str) -> None:
    with open(props["journal"], "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(f"{event} {props['name']} A={props.get('A')}\n")


def _slow(props: dict[str, Any], call: str) -> None:
    """With PELAB_HARNESS_SLOW_CHECK=<seconds> in the server's environment, check and create
    take that long (create four times as long) and note when they ran (`<journal>.calls`):
    tests see what overlapped."""
    seconds = float(os.environ.get("PELAB_HARNESS_SLOW_CHECK") or 0)
    if not seconds:
        return
    start = time.monotonic()
    time.sleep(seconds * (4 if call == "create" else 1))
    with open(f"{props['journal']}.calls", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"call": call, "name": props["name"], "start": start, "end": time.monotonic()}) + "\n")


class ReplaceOnAProvider(dynamic.ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        _slow(news, "check")
        return dynamic.CheckResult(news, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        # DiffF of TestExplicitDeleteBeforeReplace: OldOutputs["A"] against NewInputs["A"]
        if olds.get("A") != news.get("A"):
            return dynamic.DiffResult(changes=True, replaces=["A"], delete_before_replace=bool(news.get("dbr_diff")))
        return dynamic.DiffResult(changes=olds.get("note") != news.get("note"))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        _journal(news, "update")
        return dynamic.UpdateResult(dict(news))

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        _slow(props, "create")
        _journal(props, "create")
        return dynamic.CreateResult(f"{props['name']}-{props.get('A')}", dict(props))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        return dynamic.ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _journal(props, "delete")


class ReplaceOnA(dynamic.Resource):
    A: Output[str]

    def __init__(
        self,
        name: str,
        a: Input[str],
        journal: str,
        dbr_diff: bool = False,
        opts: ResourceOptions | None = None,
        note: str | None = None,
    ) -> None:
        props: dict[str, Any] = {"name": name, "A": a, "journal": journal, "dbr_diff": dbr_diff}
        if note is not None:  # an optional input: removing it is an update (diff below)
            props["note"] = note
        super().__init__(ReplaceOnAProvider(), name, props, opts)
