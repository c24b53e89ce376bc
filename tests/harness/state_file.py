"""A stack's state as `pulumi stack export --show-secrets` writes it (deployment version 3),
from a GraphRun and back: what users' state holds - URNs, types, parents, ids, inputs,
outputs, dependencies, and each dynamic resource's `__provider` blob (dill, by reference
to provider.<module>.<Class>) - so a test can drive a state written by an earlier commit
with the current code.

Secrets are the export's plaintext envelopes. What belongs to one lab and not another
(its root directory, SSH key, RBAC token, known_hosts text) is written as a placeholder
`<lab:...>` and filled from the lab at load time; everything else is kept byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.harness.echo_provider import EchoFileProvider
from tests.harness.graph import GraphRun
from tests.harness.mocks import RecordingMocks
from tests.harness.provider_server import PROVIDER_KEY, Engine, StateEntry

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # the engine's secret signature key...
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"  # ...and value (sdk/go/common/resource/sig)


def _secret(value: Any) -> dict[str, Any]:
    return {SECRET_SIG: SECRET_VALUE, "plaintext": json.dumps(value)}


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def _replace(value: Any, lab_values: Mapping[str, str], forward: bool) -> Any:
    """Lab-specific text <-> `<lab:name>` placeholders, in every string of a value."""
    if isinstance(value, str):
        for name, text in lab_values.items():
            marker = f"<lab:{name}>"
            value = value.replace(text, marker) if forward else value.replace(marker, text)
        return value
    if isinstance(value, list):
        return [_replace(v, lab_values, forward) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, lab_values, forward) for k, v in value.items()}
    return value


def _props(props: Mapping[str, Any], secret_keys: set[str], lab_values: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in props.items():
        plain = value if key == PROVIDER_KEY else _replace(value, lab_values, True)
        out[key] = _secret(plain) if key in secret_keys else plain
    return out


def engine_urns(mocks: RecordingMocks) -> dict[str, str]:
    """Mock URN -> the URN the engine gives: its type qualified by every ancestor's type but
    the root stack's (pulumi/pulumi sdk/go/common/resource/urn.go, NewURN; the SDK's mock
    monitor qualifies by the direct parent only)."""
    registered = {r.urn: r for r in mocks.resources.values()}
    out: dict[str, str] = {}

    def qualified(urn: str) -> str:
        r = registered[urn]
        return f"{qualified(r.parent)}${r.type}" if r.parent in registered else r.type

    for urn, r in registered.items():
        stack, project = urn.split("::")[0].removeprefix("urn:pulumi:"), urn.split("::")[1]
        out[urn] = f"urn:pulumi:{stack}::{project}::{qualified(urn)}::{r.name}"
    return out


def export_state(run: GraphRun, mocks: RecordingMocks, lab_values: Mapping[str, str]) -> dict[str, Any]:
    """The deployment of `run` after an `up` of `mocks`' program. `lab_values`: name ->
    lab-specific text to write as `<lab:name>` (longest texts first is safest)."""
    resources: list[dict[str, Any]] = []
    urns = engine_urns(mocks)
    for registered in mocks.resources.values():
        entry: dict[str, Any] = {
            "urn": urns[registered.urn],
            "custom": registered.custom,
            "type": registered.type,
            "parent": urns.get(registered.parent, registered.parent),
        }
        if registered.custom:
            state = run.engines[registered.name].state
            assert state is not None, registered.name
            entry.update(
                id=state.id,
                inputs=_props(state.inputs, state.secret_keys, lab_values),
                outputs=_props(state.outputs, state.secret_keys, lab_values),
                dependencies=[urns[u] for u in registered.dependencies if u in urns],
                propertyDependencies={
                    k: [urns[u] for u in v if u in urns] for k, v in registered.property_dependencies.items() if v
                },
            )
        resources.append(entry)
    return {"version": 3, "deployment": {"manifest": {"magic": "", "version": ""}, "resources": resources}}


def _plain(props: Mapping[str, Any], lab_values: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    out, secret = {}, set()
    for key, value in props.items():
        if _is_secret(value):
            secret.add(key)
            value = json.loads(value["plaintext"])
        out[key] = value if key == PROVIDER_KEY else _replace(value, lab_values, False)
    return out, secret


def load_state(run: GraphRun, exported: Mapping[str, Any], lab_values: Mapping[str, str]) -> None:
    """Make `exported` the state of `run`, as the engine would read it from a backend:
    each custom resource under its URN, with its stored `__provider` blob."""
    resources = exported["deployment"]["resources"]
    by_urn = {r["urn"]: r["urn"].rsplit("::", 1)[-1] for r in resources}
    for resource in resources:
        if not resource["custom"]:
            continue
        name = by_urn[resource["urn"]]
        inputs, secret = _plain(resource["inputs"], lab_values)
        outputs, _ = _plain(resource["outputs"], lab_values)
        engine = Engine(run.server, EchoFileProvider(), name, "dynamic:Resource")  # blob replaced below
        engine.urn = resource["urn"]
        engine.provider_blob = inputs[PROVIDER_KEY]
        engine.state = StateEntry(resource["id"], inputs, outputs, secret)
        run.engines[name] = engine
        run.deps[name] = {by_urn[u] for u in resource.get("dependencies", []) if u in by_urn}
        run.property_deps[name] = {
            k: {by_urn[u] for u in urns if u in by_urn} for k, urns in resource.get("propertyDependencies", {}).items()
        }
