"""The engine-faithful harness itself: a trivial dynamic resource through the real
provider server (`python -m pulumi.dynamic`), every RPC the engine uses, and the SDK's
limit of 4 concurrent calls."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.harness.echo_provider import EchoFileProvider
from tests.harness.provider_server import (
    PROVIDER_KEY,
    UNKNOWN,
    CheckFailedError,
    Engine,
    ProviderError,
    ProviderServer,
    Secret,
    is_unknown,
    urn_for,
)


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    with ProviderServer() as srv:
        yield srv


def test_lifecycle_create_diff_update_read_delete(server: ProviderServer, tmp_path: Path) -> None:
    engine = Engine(server, EchoFileProvider(), "echo", "EchoFile")
    path = tmp_path / "a.txt"
    state = engine.up({"path": str(path), "content": "one"})
    assert state.id == str(path)
    assert path.read_text() == "one"
    assert state.outputs["size"] == 3
    assert PROVIDER_KEY in state.outputs  # the engine keeps the pickled provider in state

    _, diff = engine.preview({"path": str(path), "content": "one"})
    assert diff is not None and diff.changes == "none"

    _, diff = engine.preview({"path": str(path), "content": "two!"})
    assert diff is not None and diff.changes == "some" and diff.replaces == []
    state = engine.up({"path": str(path), "content": "two!"})
    assert path.read_text() == "two!" and state.outputs["size"] == 4 and engine.calls[-1] == "update"

    path.write_text("drifted")
    refreshed = engine.refresh()
    assert refreshed is not None and refreshed.outputs["content"] == "drifted"

    moved = tmp_path / "b.txt"
    _, diff = engine.preview({"path": str(moved), "content": "two!"})
    assert diff is not None and diff.replaces == ["path"] and diff.delete_before_replace
    engine.up({"path": str(moved), "content": "two!"})
    assert engine.calls[-2:] == ["delete", "create"]  # delete-before-replace order
    assert moved.exists() and not path.exists()

    engine.destroy()
    assert not moved.exists()
    # refresh of a resource that vanished drops it from state (empty id)
    engine.up({"path": str(path), "content": "x"})
    path.unlink()
    assert engine.refresh() is None


def test_check_failures_come_back_as_failures_not_errors(server: ProviderServer) -> None:
    engine = Engine(server, EchoFileProvider(), "bad", "EchoFile")
    checked, diff = engine.preview({"path": "relative.txt", "content": "x"})
    assert checked.failures == [("path", "path must be absolute")]
    assert diff is None
    with pytest.raises(CheckFailedError, match="path must be absolute"):
        engine.up({"path": "relative.txt", "content": "x"})


def test_provider_exceptions_carry_the_childs_traceback(server: ProviderServer, tmp_path: Path) -> None:
    engine = Engine(server, EchoFileProvider(), "missing-dir", "EchoFile")
    with pytest.raises(ProviderError) as err:
        engine.up({"path": str(tmp_path / "no" / "such" / "dir.txt"), "content": "x"})
    assert err.value.method == "Create"
    assert "FileNotFoundError" in err.value.details and "echo_provider.py" in err.value.details


def test_unknowns_in_preview_reach_check_as_the_unknown_sentinel(server: ProviderServer) -> None:
    engine = Engine(server, EchoFileProvider(), "unknown", "EchoFile")
    checked = engine.check({"path": "/tmp/x", "content": UNKNOWN})
    assert is_unknown(checked.inputs["content"])


def test_secret_inputs_are_stripped_for_the_provider_and_secret_again_in_state(
    server: ProviderServer, tmp_path: Path
) -> None:
    engine = Engine(server, EchoFileProvider(), "secret", "EchoFile")
    path = tmp_path / "s.txt"
    state = engine.up({"path": str(path), "content": Secret("hunter2")})
    assert path.read_text() == "hunter2"  # the provider saw plaintext
    stored = json.dumps(state.serialized_state())
    assert "hunter2" not in stored and "<encrypted>" in stored
    assert state.serialized_state()[PROVIDER_KEY] != state.outputs[PROVIDER_KEY]


def test_the_provider_server_runs_at_most_four_calls_at_once(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    calls = 8
    with ProviderServer() as srv:
        provider = EchoFileProvider()
        errors: list[BaseException] = []

        def create(i: int) -> None:
            try:
                Engine(srv, provider, f"c{i}", "EchoFile").up(
                    {"path": str(tmp_path / f"{i}.txt"), "content": "x", "sleep": 1.0, "journal": str(journal)}
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(calls)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - t0
    assert not errors, errors
    events = sorted((json.loads(line) for line in journal.read_text().splitlines()), key=lambda e: e["t"])
    running = peak = 0
    for event in events:
        running += 1 if event["event"] == "start" else -1
        peak = max(peak, running)
    assert peak == 4, f"peak concurrency {peak}"
    assert elapsed >= 2.0  # 8 one-second creates in waves of 4


def test_urns_name_the_dynamic_type_like_the_engine() -> None:
    assert urn_for("m1", "PeCompileMaster").endswith(
        "pulumi-python:dynamic:Resource$pulumi-python:dynamic/PeCompileMaster::m1"
    )
