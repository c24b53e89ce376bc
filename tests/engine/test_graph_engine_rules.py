"""The harness (tests/harness/graph.py) against the engine's own expectations: the step
orders of Pulumi's lifecycle tests, reproduced through the real provider server.

TestExplicitDeleteBeforeReplace is pulumi/pulumi pkg/engine/lifecycletest/
delete_before_replace_test.go: resB's input A depends on resA (a property dependency); a
change of resA.A replaces resA, create-before-delete unless delete-before-replace is asked
by the resource option or the provider's Diff, in which case resB - whose Diff answers
replace when A is unknown - is deleted first and created again after resA.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from tests.harness.echo_provider import EchoFile
from tests.harness.graph import ENGINE_PARALLELISM, GraphRun
from tests.harness.lifecycle_provider import ReplaceOnA
from tests.harness.mocks import run_program
from tests.harness.provider_server import ProviderServer


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def explicit_dbr_program(journal: Path, a: str, b: str, dbr_a: bool | None, dbr_diff: bool = False) -> Any:
    def program() -> None:
        res_a = ReplaceOnA("resA", a, str(journal), dbr_diff, pulumi.ResourceOptions(delete_before_replace=dbr_a))
        ReplaceOnA("resB", res_a.A.apply(lambda _: b), str(journal))

    return run_program(program)


def steps(run: GraphRun, since: int) -> list[tuple[str, str]]:
    return run.operations(since)


def test_explicit_delete_before_replace_step_orders(server: ProviderServer, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    run = GraphRun(server)
    run.up(explicit_dbr_program(journal, "foo", "foo", None))
    assert steps(run, 0) == [("create", "resA"), ("create", "resB")]
    cbd = {("create-replacement", "resA"), ("replace", "resA"), ("same", "resB"), ("delete-replaced", "resA")}
    dbr = [
        ("delete-replaced", "resB"),
        ("delete-replaced", "resA"),
        ("replace", "resA"),
        ("create-replacement", "resA"),
        ("replace", "resB"),
        ("create-replacement", "resB"),
    ]

    # resA.A changes: only resA is replaced, create-before-delete (its old one deleted last).
    start = len(run.log)
    run.up(explicit_dbr_program(journal, "bar", "foo", None))
    assert set(steps(run, start)) == cbd and len(steps(run, start)) == 4
    assert steps(run, start)[-1] == ("delete-replaced", "resA")

    # The option asks delete-before-replace: resB is pulled in through its property dependency.
    start, before = len(run.log), len(journal.read_text().splitlines())
    run.up(explicit_dbr_program(journal, "baz", "foo", True))
    assert steps(run, start) == dbr
    assert journal.read_text().splitlines()[before:] == [
        "delete resB A=foo",
        "delete resA A=bar",
        "create resA A=baz",
        "create resB A=foo",
    ]

    # resB.A changes: only resB is replaced, create-before-delete.
    start = len(run.log)
    run.up(explicit_dbr_program(journal, "baz", "qux", True))
    assert steps(run, start) == [
        ("same", "resA"),
        ("create-replacement", "resB"),
        ("replace", "resB"),
        ("delete-replaced", "resB"),
    ]

    # No option: create-before-delete again.
    start = len(run.log)
    run.up(explicit_dbr_program(journal, "zam", "qux", None))
    assert set(steps(run, start)) == cbd

    # The provider's Diff asks delete-before-replace: the same cascade as the option.
    start = len(run.log)
    run.up(explicit_dbr_program(journal, "foo", "qux", None, dbr_diff=True))
    assert steps(run, start) == dbr

    # The option says False: it overrides the provider's answer.
    start = len(run.log)
    run.up(explicit_dbr_program(journal, "bar", "qux", False, dbr_diff=True))
    assert set(steps(run, start)) == cbd


def test_resources_gone_from_the_program_are_deleted_last_dependents_first(
    server: ProviderServer, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    run = GraphRun(server)
    run.up(explicit_dbr_program(journal, "foo", "foo", None))

    def only_c() -> None:
        ReplaceOnA("resC", "c", str(journal))

    start = len(run.log)
    run.up(run_program(only_c))
    assert steps(run, start) == [("create", "resC"), ("delete", "resB"), ("delete", "resA")]


def test_refresh_reads_then_up_repairs(server: ProviderServer, tmp_path: Path) -> None:
    """Read drops a resource whose id is gone (the next up creates it) and takes drifted
    outputs (the next up's Diff sees them against the inputs: update), then no change."""
    gone, drifted = tmp_path / "gone.txt", tmp_path / "drifted.txt"

    def program() -> None:
        EchoFile("gone", str(gone), "one")
        EchoFile("drifted", str(drifted), "two")

    run = GraphRun(server)
    run.up(run_program(program))
    gone.unlink()
    drifted.write_text("changed by hand")
    start = len(run.log)
    assert run.refresh() == {"gone": "", "drifted": ""}
    assert sorted(steps(run, start)) == [("refresh", "drifted"), ("refresh", "gone")]
    assert "gone" not in run.engines
    assert run.refresh_diffs["drifted"].changes == "some"  # shown as drift by `pulumi refresh`
    assert run.preview(run_program(program)) == {"gone": "create", "drifted": "update"}
    start = len(run.log)
    run.up(run_program(program))
    assert sorted(steps(run, start)) == [("create", "gone"), ("update", "drifted")]
    assert gone.read_text() == "one" and drifted.read_text() == "two"
    start = len(run.log)
    run.up(run_program(program))
    assert sorted(steps(run, start)) == [("same", "drifted"), ("same", "gone")]


def test_check_and_diff_are_serial_creates_parallel(tmp_path: Path) -> None:
    """The engine's step generator handles one registration at a time; steps then run in
    parallel (here: the provider server's own limit of 4 calls)."""
    journal = tmp_path / "journal"
    with ProviderServer(env={"PELAB_HARNESS_SLOW_CHECK": "0.3"}) as srv:
        run = GraphRun(srv)

        def program() -> None:
            for i in range(6):
                ReplaceOnA(f"r{i}", "x", str(journal), opts=pulumi.ResourceOptions())

        t0 = time.monotonic()
        run.up(run_program(program))
        elapsed = time.monotonic() - t0
    events = [json.loads(line) for line in (tmp_path / "journal.calls").read_text().splitlines()]
    checks = sorted((e["start"], e["end"]) for e in events if e["call"] == "check")
    creates = sorted((e["start"], e["end"]) for e in events if e["call"] == "create")
    assert len(checks) == 6 and len(creates) == 6
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(checks)), checks  # never overlapping
    overlapping = max(sum(1 for s, e in creates if s <= t < e) for t, _ in creates)
    assert overlapping > 1, creates  # creates do run at once
    assert elapsed >= 6 * 0.3
    assert overlapping <= 4  # the provider server's limit
    assert ENGINE_PARALLELISM >= 4
