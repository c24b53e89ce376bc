"""Drive a whole program's dynamic resources through the provider server in the engine's
order - test-only, for end-to-end tests against the lab (users have the real engine).

The program runs under `set_mocks` (tests/harness/mocks.py), which records every custom
resource with its inputs and dependencies. `GraphRun.up(mocks)` then does what `pulumi
up` does with that graph and the state of the previous `up`: creates and updates in
dependency order, independent resources at the same time (the engine's parallelism is
unbounded; the provider server's own limit applies), then deletes of resources no longer
in the program, dependents first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pulumi.runtime import rpc

from tests.harness.echo_provider import EchoFileProvider
from tests.harness.mocks import RecordingMocks, Registered
from tests.harness.provider_server import Engine, ProviderError, ProviderServer, Secret

PROVIDER_KEY = "__provider"


def _unwrap(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig:
        return value["value"], True
    return value, False


def engine_inputs(resource: Registered) -> tuple[dict[str, Any], str]:
    """Recorded inputs -> harness inputs (secrets as Secret) and the provider blob."""
    blob, _ = _unwrap(resource.inputs[PROVIDER_KEY])
    out: dict[str, Any] = {}
    for key, raw in resource.inputs.items():
        if key == PROVIDER_KEY:
            continue
        value, secret = _unwrap(raw)
        out[key] = Secret(value) if secret or key in resource.secret_inputs else value
    return out, str(blob)


def waves(names: set[str], deps: dict[str, set[str]]) -> list[list[str]]:
    """Topological layers: each name after everything it depends on (within `names`)."""
    left, done, out = set(names), set[str](), []
    while left:
        ready = sorted(n for n in left if not (deps.get(n, set()) & names) - done)
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(left)}")
        out.append(ready)
        done |= set(ready)
        left -= set(ready)
    return out


class GraphRun:
    """State across `up`s of one stack: an Engine per resource name, and its dependencies."""

    def __init__(self, server: ProviderServer, parallelism: int = 32):
        self.server = server
        self.parallelism = parallelism
        self.engines: dict[str, Engine] = {}
        self.deps: dict[str, set[str]] = {}
        self.log: list[tuple[str, str]] = []  # (operation, resource name), in order
        # (resource name, start, end) of each resource's check+diff+create/update, monotonic
        # seconds: bench/ reads it to show where an `up`'s time goes.
        self.timeline: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def up(self, mocks: RecordingMocks) -> None:
        resources = {r.name: r for r in mocks.resources.values() if r.custom}
        by_urn = {r.urn: r.name for r in resources.values()}
        deps = {n: {by_urn[u] for u in r.dependencies if u in by_urn} for n, r in resources.items()}
        for layer in waves(set(resources), deps):
            self._run_layer(lambda name: self._up_one(resources[name]), layer)
        gone = set(self.engines) - set(resources)
        old_deps = {n: self.deps.get(n, set()) for n in gone}
        for layer in reversed(waves(gone, old_deps)):
            self._run_layer(self._delete_one, layer)
        self.deps = deps

    def _run_layer(self, operation: Callable[[str], None], layer: list[str]) -> None:
        """Every resource of a layer at once; like the engine, a failure stops later layers
        and the error reports every resource that failed, each under its name."""
        failures: list[tuple[str, ProviderError]] = []

        def attempt(name: str) -> None:
            try:
                operation(name)
            except ProviderError as exc:
                with self.lock:
                    failures.append((name, exc))

        with ThreadPoolExecutor(min(self.parallelism, len(layer))) as pool:
            list(pool.map(attempt, layer))
        if failures:
            first = failures[0][1]
            raise ProviderError(
                first.method,
                first.code,
                "\n\n".join(f"{name}: {exc.details}" for name, exc in sorted(failures, key=lambda f: f[0])),
            )

    def destroy(self) -> None:
        """`pulumi destroy`: every resource, dependents first."""
        names = set(self.engines)
        for layer in reversed(waves(names, self.deps)):
            self._run_layer(self._delete_one, layer)

    def _up_one(self, resource: Registered) -> None:
        inputs, blob = engine_inputs(resource)
        with self.lock:
            engine = self.engines.get(resource.name)
            if engine is None:
                engine = Engine(self.server, EchoFileProvider(), resource.name, "dynamic:Resource")
                self.engines[resource.name] = engine
        engine.provider_blob = blob
        before = len(engine.calls)
        started = time.monotonic()
        engine.up(inputs)
        with self.lock:
            self.timeline.append((resource.name, started, time.monotonic()))
            self.log += [(call, resource.name) for call in engine.calls[before:] if call not in ("check", "diff")]

    def _delete_one(self, name: str) -> None:
        self.engines[name].destroy()
        with self.lock:
            self.log.append(("delete", name))
            del self.engines[name]

    def outputs(self, name: str) -> dict[str, Any]:
        state = self.engines[name].state
        assert state is not None, f"{name} has no state"
        return state.outputs

    def operations(self, since: int = 0) -> list[tuple[str, str]]:
        return self.log[since:]
