"""Drive a whole program's dynamic resources through the provider server in the engine's
order - test-only, for end-to-end tests against the lab (users have the real engine).

The program runs under `set_mocks` (tests/harness/mocks.py), which records every custom
resource with its inputs and its explicit and property dependencies. `GraphRun` then does
with that graph and the state of the previous run what the engine does, following its
rules (pulumi/pulumi, read at HEAD 1b5949891b):

* Step generation is serial: Check and Diff of one registration at a time, in the
  program's order (the engine's step generator; parallel Diff only with
  PULUMI_PARALLEL_DIFF); a Check failure stops the run, after the steps already
  generated for the registrations before it (the engine starts each step as soon as it
  is generated). Creates, updates and deletes then run in parallel, at most
  `parallelism` at once: the CLI's default is 4 x GOMAXPROCS
  (pkg/cmd/pulumi/operations/up.go, defaultParallel).
* No change: the new inputs are stored ("same" step). Update: Update(olds = old outputs).
* Replace (pkg/resource/deploy/step_generator.go): Check again with no olds, then
  - delete-before-replace (the provider's Diff or the resource option): the dependents
    that `calculateDependentReplacements` finds - those with a *property* dependency on a
    resource in the replace set whose Diff, with those inputs unknown, answers replace -
    are deleted first (dependents first), then the resource; it is created again, and each
    such dependent is created again when the program registers it (pending replacement);
  - otherwise create the new one now and delete the old one after every create and update
    of the run.
* Resources no longer in the program are deleted at the end, dependents first.
* refresh(): Read each resource (in parallel); an empty id drops it from the state;
  otherwise the state takes the read outputs (and inputs, if Read returned some) and the
  engine diffs them against the old inputs to show the drift (pkg/resource/deploy/step.go,
  RefreshStep.Apply) - the harness keeps that diff in `refresh_diffs`.

tests/engine/test_graph_engine_rules.py checks these orders against the expected steps of
Pulumi's own lifecycle tests (pkg/engine/lifecycletest).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pulumi.runtime import rpc

from tests.harness.echo_provider import EchoFileProvider
from tests.harness.mocks import RecordingMocks, Registered
from tests.harness.provider_server import (
    UNKNOWN,
    CheckFailedError,
    DiffResponse,
    Engine,
    ProviderError,
    ProviderServer,
    Secret,
    StateEntry,
)

PROVIDER_KEY = "__provider"
PropertyDeps = dict[str, dict[str, set[str]]]  # resource -> input -> the resources its value came from
ENGINE_PARALLELISM = 4 * (os.cpu_count() or 1)  # the CLI's default --parallel


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


@dataclass
class Plan:
    """What step generation decided for one registration."""

    op: str  # "create" | "same" | "update" | "replace"
    inputs: dict[str, Any]
    secret: set[str]
    diff: DiffResponse | None = None
    delete_before_replace: bool = False
    dependents: list[str] = field(default_factory=list)  # pulled into a delete-before-replace
    started: float = 0.0  # monotonic: when its Check began (bench/ shows where time goes)


class GraphRun:
    """State across runs of one stack: an Engine per resource name, its dependencies
    (explicit and per input), and the log of steps, named as the engine names them:
    create, same, update, delete, replace, create-replacement, delete-replaced."""

    def __init__(self, server: ProviderServer, parallelism: int = ENGINE_PARALLELISM):
        self.server = server
        self.parallelism = parallelism
        self.engines: dict[str, Engine] = {}
        self.deps: dict[str, set[str]] = {}
        self.property_deps: dict[str, dict[str, set[str]]] = {}
        self.log: list[tuple[str, str]] = []  # (operation, resource name), in order
        # (resource name, start, end) of each resource's check+diff+create/update, monotonic
        # seconds: bench/ reads it to show where an `up`'s time goes.
        self.timeline: list[tuple[str, float, float]] = []
        self.refresh_diffs: dict[str, DiffResponse] = {}
        self.lock = threading.Lock()
        self.step_generator = threading.Lock()  # Check and Diff: one registration at a time
        self.pending_replacement: set[str] = set()  # deleted by a delete-before-replace cascade
        self._registered: set[str] = set()  # this run's registrations so far
        self._replaced_olds: list[tuple[str, StateEntry]] = []  # create-before-delete: deleted at the end

    # --- the graph ------------------------------------------------------------------------
    @staticmethod
    def _graph(mocks: RecordingMocks) -> tuple[dict[str, Registered], dict[str, set[str]], PropertyDeps]:
        resources = {r.name: r for r in mocks.resources.values() if r.custom}
        by_urn = {r.urn: r.name for r in resources.values()}
        props = {
            n: {k: {by_urn[u] for u in urns if u in by_urn} for k, urns in r.property_dependencies.items()}
            for n, r in resources.items()
        }
        deps = {
            n: {by_urn[u] for u in r.dependencies if u in by_urn} | {d for ds in props[n].values() for d in ds}
            for n, r in resources.items()
        }
        return resources, deps, props

    def _engine(self, resource: Registered) -> Engine:
        with self.lock:
            engine = self.engines.get(resource.name)
            if engine is None:
                engine = Engine(self.server, EchoFileProvider(), resource.name, "dynamic:Resource")
                self.engines[resource.name] = engine
        return engine

    def seed(self, mocks: RecordingMocks, outputs: Callable[[str], dict[str, Any]]) -> None:
        """A state as if `up` had created this program's resources, each with its inputs plus
        `outputs(name)` as outputs: previews and replacement plans without a lab."""
        resources, deps, props = self._graph(mocks)
        for name, resource in resources.items():
            inputs, blob = engine_inputs(resource)
            engine = self._engine(resource)
            engine.provider_blob = blob
            plain, secret = engine._plain(inputs)
            engine.state = StateEntry(f"{name}-id", plain, {**plain, **outputs(name)}, secret)
        self.deps, self.property_deps = deps, props

    def dependent_replacements(self, root: str) -> list[str]:
        """What the engine deletes before `root` when it replaces it delete-before-replace."""
        with self.step_generator:
            return self._dependent_replacements(root, self.deps, self.property_deps)

    # --- pulumi preview / up ------------------------------------------------------------
    def preview(self, mocks: RecordingMocks) -> dict[str, str]:
        """`pulumi preview`: Check and Diff of each resource, one at a time, in registration
        order; nothing created or changed. Returns each resource's planned operation."""
        resources, _, _ = self._graph(mocks)
        out: dict[str, str] = {}
        for name, resource in resources.items():
            engine = self.engines.get(name)
            if engine is None:
                out[name] = "create"
                continue
            engine.provider_blob = engine_inputs(resource)[1]
            checked, diff = engine.preview(engine_inputs(resource)[0])
            if checked.failures:
                raise CheckFailedError(checked.failures)
            out[name] = "same" if diff is None or diff.changes == "none" else "replace" if diff.replaces else "update"
        for name in set(self.engines) - set(resources):
            out[name] = "delete"
        return out

    def up(self, mocks: RecordingMocks) -> None:
        """Layer by layer (each resource after everything it depends on): step generation
        for the layer's registrations one at a time in the program's order - a Check
        failure stops the run before any of the layer's steps - then the steps at once."""
        resources, deps, props = self._graph(mocks)
        order = {name: i for i, name in enumerate(resources)}  # registration order
        self._registered = set()
        self._replaced_olds = []
        old_deps, old_props = dict(self.deps), dict(self.property_deps)
        try:
            for layer in waves(set(resources), deps):
                plans: dict[str, Plan] = {}
                try:
                    for name in sorted(layer, key=order.__getitem__):
                        plans[name] = self._plan_one(resources[name], old_deps, old_props)
                except CheckFailedError:
                    # The engine starts each step as soon as it is generated: a Check that
                    # fails later in the program stops the run only after the steps of the
                    # registrations before it (seen through the real CLI: tests/labtests/
                    # test_lifecycle.py, a FileSync created before the batch refused).
                    self._run_layer(functools.partial(self._execute_planned, plans), list(plans))
                    raise
                self._run_layer(functools.partial(self._execute_planned, plans), list(plans))
        finally:
            for name in resources:
                if name in self.engines and self.engines[name].state is not None:
                    self.deps[name], self.property_deps[name] = deps[name], props[name]
        gone = {n for n in self.engines if n not in resources}
        condemned = {f"{n}#old": (n, state) for n, state in self._replaced_olds}
        delete_deps = {n: old_deps.get(n, set()) for n in gone}
        delete_deps.update({key: old_deps.get(n, set()) for key, (n, _) in condemned.items()})
        for layer in reversed(waves(gone | set(condemned), delete_deps)):
            self._run_layer(lambda key: self._delete_one(key, condemned), layer)
        for name in gone:
            self.deps.pop(name, None)
            self.property_deps.pop(name, None)

    def _run_layer(self, operation: Callable[[str], None], layer: list[str]) -> None:
        """Every resource of a layer at once (at most `parallelism`); like the engine, a
        failure stops later layers and the error reports every resource that failed."""
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

    def _record(self, op: str, name: str) -> None:
        with self.lock:
            self.log.append((op, name))

    def _plan_one(
        self, resource: Registered, old_deps: dict[str, set[str]], old_props: dict[str, dict[str, set[str]]]
    ) -> Plan:
        started = time.monotonic()
        inputs, blob = engine_inputs(resource)
        engine = self._engine(resource)
        with self.step_generator:
            engine.provider_blob = blob
            plan = self._plan(engine, resource, inputs, old_deps, old_props)
            self._registered.add(resource.name)
        plan.started = started
        return plan

    def _execute_planned(self, plans: dict[str, Plan], name: str) -> None:
        plan = plans[name]
        self._execute(self.engines[name], plan)
        with self.lock:
            self.timeline.append((name, plan.started, time.monotonic()))

    def _plan(
        self,
        engine: Engine,
        resource: Registered,
        inputs: dict[str, Any],
        old_deps: dict[str, set[str]],
        old_props: dict[str, dict[str, set[str]]],
    ) -> Plan:
        """Step generation for one registration (under the step generator's lock)."""
        checked, diff = engine.preview(inputs)
        if checked.failures:
            raise CheckFailedError(checked.failures)
        _, secret = engine._plain(inputs)
        name = resource.name
        if engine.state is None:
            return Plan("create", checked.inputs, secret)
        if name in self.pending_replacement:
            # Deleted by a dependent delete-before-replace: created again, whatever the diff
            # (step_generator.go: "re-create replaced resource ... deleted due to dependent DBR").
            return Plan("replace", checked.inputs, secret, diff, True)
        if diff is None or diff.changes == "none":
            return Plan("same", checked.inputs, secret, diff)
        if not diff.replaces:
            return Plan("update", checked.inputs, secret, diff)
        # A replacement: Check again without olds (the old defaults no longer apply).
        plain, _ = engine._plain(inputs)
        engine.calls.append("check")
        rechecked = self.server.check(engine.urn, {}, plain)
        if rechecked.failures:
            raise CheckFailedError(rechecked.failures)
        # the resource option, when the program set it, overrides the provider's answer
        dbr = resource.delete_before_replace if resource.delete_before_replace_defined else diff.delete_before_replace
        plan = Plan("replace", rechecked.inputs, secret, diff, dbr)
        if dbr:
            plan.dependents = self._dependent_replacements(name, old_deps, old_props)
        return plan

    def _dependent_replacements(
        self, root: str, old_deps: dict[str, set[str]], old_props: dict[str, dict[str, set[str]]]
    ) -> list[str]:
        """calculateDependentReplacements: the root's transitive dependents (in the last
        state's graph, not yet registered in this run), in dependency order, that have an
        input depending on a resource being replaced and whose Diff - with those inputs
        unknown - answers replace."""
        dependents: set[str] = set()
        frontier = {root}
        while frontier:
            frontier = {n for n, ds in old_deps.items() if ds & frontier and n not in dependents} - {root}
            dependents |= frontier
        replace_set, out = {root}, []
        for layer in waves(dependents, old_deps):
            for name in layer:
                state = self.engines[name].state if name in self.engines else None
                if state is None or name in self._registered:
                    continue
                keys = [k for k, ds in old_props.get(name, {}).items() if ds & replace_set and k in state.inputs]
                if not keys:
                    continue
                engine = self.engines[name]
                engine.calls.append("diff")
                news = {**state.inputs, **dict.fromkeys(keys, UNKNOWN)}
                if self.server.diff(state.id, engine.urn, state.outputs, news).replaces:
                    out.append(name)
                    replace_set.add(name)
        return out

    def _execute(self, engine: Engine, plan: Plan) -> None:
        name, server = engine.name, self.server
        if plan.op == "same":
            assert engine.state is not None
            engine.state = StateEntry(engine.state.id, plan.inputs, engine.state.outputs, plan.secret)
            self._record("same", name)
            return
        if plan.op == "create":
            engine.calls.append("create")
            id_, outs = server.create(engine.urn, plan.inputs)
            engine.state = StateEntry(id_, plan.inputs, outs, plan.secret)
            self._record("create", name)
            return
        if plan.op == "update":
            assert engine.state is not None
            engine.calls.append("update")
            outs = server.update(engine.state.id, engine.urn, engine.state.outputs, plan.inputs)
            engine.state = StateEntry(engine.state.id, plan.inputs, outs, plan.secret)
            self._record("update", name)
            return
        old = engine.state
        assert old is not None
        if plan.delete_before_replace:
            if name in self.pending_replacement:  # its old one went in a cascade: create only
                self.pending_replacement.discard(name)
            else:
                for dependent in reversed(plan.dependents):  # dependents first
                    self._delete_replaced(dependent)
                    self.pending_replacement.add(dependent)
                self._delete_replaced(name)
            self._record("replace", name)
        engine.calls.append("create")
        id_, outs = server.create(engine.urn, plan.inputs)
        engine.state = StateEntry(id_, plan.inputs, outs, plan.secret)
        self._record("create-replacement", name)
        if not plan.delete_before_replace:  # create before delete: the old one goes at the end
            self._record("replace", name)
            with self.lock:
                self._replaced_olds.append((name, old))

    def _delete_replaced(self, name: str) -> None:
        engine = self.engines[name]
        state = engine.state
        assert state is not None
        engine.calls.append("delete")
        self.server.delete(engine.urn, state)
        self._record("delete-replaced", name)

    def _delete_one(self, key: str, condemned: dict[str, tuple[str, StateEntry]]) -> None:
        started = time.monotonic()
        try:
            self._delete(key, condemned)
        finally:
            with self.lock:
                self.timeline.append((condemned[key][0] if key in condemned else key, started, time.monotonic()))

    def _delete(self, key: str, condemned: dict[str, tuple[str, StateEntry]]) -> None:
        if key in condemned:  # a create-before-delete replacement's old resource
            name, state = condemned[key]
            engine = self.engines[name]
            engine.calls.append("delete")
            self.server.delete(engine.urn, state)
            self._record("delete-replaced", name)
            return
        if key in self.pending_replacement:  # deleted in a cascade, no longer in the program
            self.engines[key].state = None
            self._record("remove-pending-replace", key)
        else:
            self.engines[key].destroy()
            self._record("delete", key)
        with self.lock:
            del self.engines[key]
            self.pending_replacement.discard(key)

    # --- pulumi refresh / destroy --------------------------------------------------------
    def refresh(self) -> dict[str, str]:
        """`pulumi refresh`: Read every resource at once; returns each one's status output
        ("" when Read found it gone: it leaves the state)."""
        out: dict[str, str] = {}

        def read(name: str) -> None:
            engine = self.engines[name]
            old = engine.state
            assert old is not None
            new = engine.refresh()
            self._record("refresh", name)
            if new is None:
                with self.lock:
                    del self.engines[name]
                    out[name] = ""
                return
            engine.calls.append("diff")
            diff = self.server.diff(new.id, engine.urn, new.outputs, {**old.inputs})
            with self.lock:
                self.refresh_diffs[name] = diff
                out[name] = str(new.outputs.get("status", ""))

        self._run_layer(read, sorted(n for n, e in self.engines.items() if e.state is not None))
        for name in set(self.deps) - set(self.engines):
            self.deps.pop(name)
            self.property_deps.pop(name, None)
        return out

    def destroy(self) -> None:
        """`pulumi destroy`: every resource, dependents first."""
        names = set(self.engines)
        for layer in reversed(waves(names, self.deps)):
            self._run_layer(lambda key: self._delete_one(key, {}), layer)

    def outputs(self, name: str) -> dict[str, Any]:
        state = self.engines[name].state
        assert state is not None, f"{name} has no state"
        return state.outputs

    def operations(self, since: int = 0) -> list[tuple[str, str]]:
        return self.log[since:]
