"""The harness (tests/harness/graph.py) checked against the real engine: the same programs
(scale-out, a removed input, a delete-before-replace replacement, refresh of drift and of
a resource gone, scale-in) run through the built Pulumi CLI and through GraphRun, with one
step at a time on both sides (`--parallel 1`), and the steps compared.

What is compared: every resource's own steps in order, the order of the steps of each
resource and the one it depends on, and the journal of what the providers really did.
Independent resources may interleave differently: neither side promises an order for them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_stack import CliStack
from tests.engine.cli_program import program
from tests.harness.graph import GraphRun
from tests.harness.mocks import run_program
from tests.harness.provider_server import ProviderServer

Steps = list[tuple[str, str]]
DEPENDS = {"r2": "r1", "r3": "r2"}  # the program's property dependencies: r2.A from r1, r3.A from r2


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


class Both:
    """One program, two stacks: the real engine's and the harness's, each with its own
    journal and files."""

    def __init__(self, server: ProviderServer, tmp: Path) -> None:
        self.tmp = tmp
        self.harness = GraphRun(server, parallelism=1)
        self.cli: CliStack | None = None

    def config(self, side: str, resources: list[dict[str, Any]], files: list[str]) -> dict[str, Any]:
        root = self.tmp / side
        root.mkdir(exist_ok=True)
        return {
            "t:journal": str(root / "journal"),
            "t:resources": copy.deepcopy(resources),
            "t:files": [{"name": f, "path": str(root / f), "content": "x"} for f in files],
        }

    def up(self, resources: list[dict[str, Any]], files: list[str]) -> tuple[Steps, Steps]:
        engine_config = self.config("engine", resources, files)
        if self.cli is None:
            self.cli = CliStack(
                "t-harness", self.tmp / "stack", engine_config, program="tests.engine.cli_program:program"
            )
        self.cli.set_config(engine_config)
        engine = self.cli.up("--parallel", "1").steps(include_same=True)
        start = len(self.harness.log)
        harness_config = {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in self.config("harness", resources, files).items()
        }
        self.harness.up(run_program(program, stack="t-harness", config=harness_config))
        return engine, self.harness.operations(start)

    def refresh(self) -> tuple[Steps, Steps]:
        assert self.cli is not None
        engine = self.cli.refresh("--parallel", "1").steps(include_same=True)
        found = self.harness.refresh()
        harness = []
        for name in sorted(found):
            diff = self.harness.refresh_diffs.get(name)
            harness.append(
                (
                    "delete"
                    if name not in self.harness.engines
                    else "update"
                    if diff and diff.changes == "some"
                    else "same",
                    name,
                )
            )
        return engine, harness

    def drift(self, name: str, content: str | None) -> None:
        for side in ("engine", "harness"):
            path = self.tmp / side / name
            if content is None:
                path.unlink()
            else:
                path.write_text(content)

    def journals(self) -> tuple[list[str], list[str]]:
        return tuple((self.tmp / side / "journal").read_text().splitlines() for side in ("engine", "harness"))  # type: ignore[return-value]


def assert_same_steps(engine: Steps, harness: Steps) -> None:
    assert sorted(engine) == sorted(harness), (engine, harness)
    for name in {n for _, n in engine}:
        own = [op for op, n in engine if n == name]
        assert own == [op for op, n in harness if n == name], (name, engine, harness)
    for dependent, dependency in DEPENDS.items():
        pair = (dependent, dependency)
        assert [s for s in engine if s[1] in pair and s[0] != "same"] == [
            s for s in harness if s[1] in pair and s[0] != "same"
        ], (pair, engine, harness)


def test_the_harness_predicts_the_engines_steps(server: ProviderServer, tmp_path: Path) -> None:
    both = Both(server, tmp_path)
    r1, r2, r3 = (
        {"name": "r1", "A": "a"},
        {"name": "r2", "A": "b", "after": "r1", "note": "n"},
        {"name": "r3", "A": "c", "after": "r2"},
    )
    try:
        # scale-out: 0 -> 2, then a third.
        assert_same_steps(*both.up([r1, r2], ["f1"]))
        assert_same_steps(*both.up([r1, r2, r3], ["f1"]))
        # an optional input removed: one update.
        r2b = {k: v for k, v in r2.items() if k != "note"}
        engine, harness = both.up([r1, r2b, r3], ["f1"])
        assert_same_steps(engine, harness)
        assert [s for s in engine if s[0] != "same"] == [("update", "r2")]
        # a delete-before-replace of r1: its dependents (property dependencies) go first.
        r1b = {**r1, "A": "a2", "dbr": True}
        engine, harness = both.up([r1b, r2b, r3], ["f1"])
        assert_same_steps(engine, harness)
        assert engine.index(("delete-replaced", "r3")) < engine.index(("delete-replaced", "r1"))
        # refresh: drift, then a resource gone.
        both.drift("f1", "changed")
        engine, harness = both.refresh()
        assert sorted(engine) == sorted(harness) and ("update", "f1") in engine, (engine, harness)
        both.drift("f1", None)
        engine, harness = both.refresh()
        assert sorted(engine) == sorted(harness) and ("delete", "f1") in engine, (engine, harness)
        assert_same_steps(*both.up([r1b, r2b, r3], ["f1"]))  # created again
        # scale-in: 3 -> 1, dependents deleted first.
        engine, harness = both.up([r1b], [])
        assert_same_steps(engine, harness)
        assert engine.index(("delete", "r3")) < engine.index(("delete", "r2"))
        engine_journal, harness_journal = both.journals()
        assert engine_journal == harness_journal
    finally:
        if both.cli is not None:
            both.cli.destroy(check=False)
        both.harness.destroy()
