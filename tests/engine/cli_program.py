"""A small program for checking the harness against the real engine: the same programs
run through both (tests/engine/test_harness_against_cli.py).

Config `t:journal` (a file both providers append to) and `t:resources`, a list of
`{name, A, after?, dbr?, note?}`: a ReplaceOnA resource (replaced when A changes;
delete-before-replace when `dbr`), whose A takes a property dependency on resource
`after`, with an optional input `note`; and `t:files`, a list of `{name, path, content}`
EchoFile resources (Read follows the file, so refresh sees drift)."""

from __future__ import annotations

import functools
from typing import Any

import pulumi

from tests.harness.echo_provider import EchoFile
from tests.harness.lifecycle_provider import ReplaceOnA


def _constant(value: Any, _dependency: Any) -> Any:
    return value


def program() -> None:
    config = pulumi.Config("t")
    journal = config.require("journal")
    made: dict[str, ReplaceOnA] = {}
    for spec in config.get_object("resources") or []:
        a: Any = spec["A"]
        if spec.get("after"):
            a = made[spec["after"]].A.apply(functools.partial(_constant, a))
        made[spec["name"]] = ReplaceOnA(spec["name"], a, journal, bool(spec.get("dbr")), note=spec.get("note"))
    for spec in config.get_object("files") or []:
        EchoFile(spec["name"], spec["path"], spec["content"])
