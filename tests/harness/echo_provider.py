"""A trivial dynamic provider for testing the harness itself: a file with some content.

It lives in an importable module (not in a test file) because the provider server
unpickles providers by reference, exactly as it will for provider/.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from pulumi import Input, Output, ResourceOptions, dynamic

INPUTS = ("path", "content", "sleep", "journal")


def _journal(journal: str | None, event: str) -> None:
    """Append one timestamped event; tests read it to measure call concurrency."""
    if not journal:
        return
    with open(journal, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"t": time.monotonic(), "event": event, "pid": os.getpid()}) + "\n")


class EchoFileProvider(dynamic.ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        if not str(news.get("path", "")).startswith("/"):
            failures.append(dynamic.CheckFailure("path", "path must be absolute"))
        return dynamic.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        _journal(props.get("journal"), "start")
        time.sleep(float(props.get("sleep", 0)))
        Path(props["path"]).write_text(props["content"])
        _journal(props.get("journal"), "end")
        return dynamic.CreateResult(
            props["path"], {k: props[k] for k in INPUTS if k in props} | {"size": len(props["content"])}
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [k for k in ("path", "content") if olds.get(k) != news.get(k)]
        return dynamic.DiffResult(
            changes=bool(changed), replaces=[k for k in changed if k == "path"], delete_before_replace=True
        )

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        Path(news["path"]).write_text(news["content"])
        return dynamic.UpdateResult({k: news[k] for k in INPUTS if k in news} | {"size": len(news["content"])})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        path = Path(id_)
        if not path.exists():
            return dynamic.ReadResult("", {})
        content = path.read_text()
        return dynamic.ReadResult(id_, {**props, "content": content, "size": len(content)})

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        Path(id_).unlink(missing_ok=True)


class EchoFile(dynamic.Resource):
    """The resource users of the echo provider declare in a program."""

    size: Output[int]

    def __init__(self, name: str, path: Input[str], content: Input[str], opts: ResourceOptions | None = None) -> None:
        super().__init__(EchoFileProvider(), name, {"path": path, "content": content, "size": None}, opts)
