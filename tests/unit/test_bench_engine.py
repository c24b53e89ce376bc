"""The real-CLI bench's reading of the CLI's OpenTelemetry spans (bench/engine.py) and the
Pulumi-side process kinds (bench/cpu.py)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cpu import engine_kind
from bench.engine import Split
from bench.spans import read_spans


def span(name: str, start: float, end: float) -> dict[str, object]:
    return {"name": name, "startTimeUnixNano": str(int(start * 1e9)), "endTimeUnixNano": str(int(end * 1e9))}


def test_a_runs_split_comes_from_its_spans(tmp_path: Path) -> None:
    spans = [
        span("pulumi", 100.0, 102.0),
        span("diyBackend.getSnapshot", 100.2, 100.25),
        span("newPlugin", 100.5, 100.65),
        span("pulumirpc.ResourceProvider/Check", 100.7, 100.71),
        span("pulumirpc.ResourceProvider/Check", 100.8, 100.83),
        span("pulumirpc.ResourceProvider/Diff", 100.9, 100.91),
        span("gocloud.dev/blob.NewWriter", 101.0, 101.01),
        span("gocloud.dev/blob.Copy", 101.1, 101.12),
    ]
    line = {"resourceSpans": [{"scopeSpans": [{"spans": spans[:4]}, {"spans": spans[4:]}]}]}
    (tmp_path / "otel.json").write_text(json.dumps(line) + "\n\n" + json.dumps({"resourceSpans": []}) + "\n")
    split = Split.of(read_spans(tmp_path / "otel.json"), 2.5)
    assert round(split.cli, 3) == 2.0 and round(split.before_state, 3) == 0.2
    assert round(split.state_read, 3) == 0.05 and round(split.plugin_start, 3) == 0.15
    assert (split.checks, round(split.check_seconds, 3)) == (2, 0.04)
    assert (split.diffs, split.checkpoints, round(split.checkpoint_seconds, 3)) == (1, 1, 0.03)
    assert "outside the Go CLI (program host start, scripts/pulumi) 0.50" in split.line()


def test_a_run_without_a_trace_file_has_only_its_wall(tmp_path: Path) -> None:
    split = Split.of(read_spans(tmp_path / "missing.json"), 1.0)
    assert (split.wall, split.cli, split.checks) == (1.0, 0.0, 0)


def test_the_pulumi_side_is_told_apart_by_command_line() -> None:
    assert engine_kind("/opt/pe-compile-masters/pulumi/v3.276.0/pulumi up --yes --client=127.0.0.1:1") == (
        "Pulumi CLI (Go engine)"
    )
    assert engine_kind("/work/.venv/bin/python -m pulumicli preview --stack x") == "program host (pulumicli)"
    assert engine_kind("/work/.venv/bin/python -u -m pulumi.dynamic") == "provider server (the product)"
    assert engine_kind("/usr/bin/ruby /opt/puppetlabs/bin/puppet agent --onetime") is None


def test_the_healthy_table_names_every_provider_of_the_state_contract() -> None:
    import importlib

    from bench.healthy import HEALTHY, healthy_outputs

    for _, path, _ in HEALTHY:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path
    assert healthy_outputs("lab-pool-admission") == {"status": "admitted"}
    assert healthy_outputs("compile01.pelab.test-pool") == {"status": "UP"}
    assert healthy_outputs("lab-infra-refresh") == {"status": "whitelisted"}


def test_a_check_sent_while_every_provider_thread_is_taken_counts_as_queued() -> None:
    from bench.spans import Span, provider_calls, queued_checks

    call = "pulumirpc.ResourceProvider/"
    spans = [
        Span("pulumi", 0.0, 30.0),
        *(Span(call + "Create", 1.0, 10.0 + i) for i in range(4)),  # four long creates: every thread
        Span(call + "Check", 2.0, 10.0),  # sent behind them: waited for one to end
        Span(call + "Check", 20.0, 20.1),  # nothing in flight
        Span("pulumirpc.ResourceMonitor/RegisterResource", 2.0, 25.0),  # not a provider call
    ]
    calls = provider_calls(spans)
    assert [(c.method, c.in_flight) for c in calls] == [("Create", 0), ("Create", 1), ("Create", 2), ("Create", 3),
                                                        ("Check", 4), ("Check", 0)]  # fmt: skip
    assert queued_checks(calls) == (1, 8.0)


def test_a_run_is_cut_at_its_long_provider_calls() -> None:
    from bench.spans import Span, phases

    call = "pulumirpc.ResourceProvider/"
    spans = [
        Span(call + "Check", 10.0, 10.1),
        Span(call + "Update", 10.2, 200.0),  # the batch
        *(Span(call + "Create", 200.1 + i, 203.0 + i) for i in range(3)),  # per-master calls
        Span(call + "Update", 210.0, 270.0),  # the infrastructure runs
        Span(call + "Create", 270.5, 271.0),
        *(Span(call + "Delete", 272.0 + i, 300.0) for i in range(3)),  # deletes waiting for one removal
    ]
    assert phases(spans) == [
        ("between", 10.0, 10.2),
        ("long call 1 (1 x Update)", 10.2, 200.0),
        ("between", 200.0, 210.0),
        ("long call 2 (1 x Update)", 210.0, 270.0),
        ("between", 270.0, 272.0),
        ("long call 3 (3 x Delete)", 272.0, 300.0),
    ]
