"""What users' stacks hold is a contract: dynamic providers are pickled by reference, so
each resource's `__provider` names `provider.<module>.<Class>`; resources are named by
certname (`<certname>-master|-code|-pool`) and deployment (`<stack>-provisioning|-infra-
refresh|-pool-admission`) under the component types `pe:index:PeDeployment` and
`pe:index:CompileMaster`. Renaming any of them makes existing stacks replace or orphan
their resources (docs/state-contract.md). This pins them for the lab stack's program
against tests/data/state-contract.json; change that file only with a migration."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import dill

from tests.engine.test_program_graph import lab_config, run
from tests.harness.mocks import RecordingMocks

CONTRACT = Path(__file__).resolve().parents[1] / "data" / "state-contract.json"


def provider_path(blob: Any) -> str:
    """The class the engine's `__provider` blob unpickles to (by reference: importable).
    The blob is always a secret: the mocks see the secret's wire form."""
    if isinstance(blob, dict):
        blob = blob["value"]
    provider = dill.loads(base64.b64decode(blob))
    return f"{type(provider).__module__}.{type(provider).__qualname__}"


def contract_of(mocks: RecordingMocks) -> dict[str, dict[str, str]]:
    types = {r.urn: r.type for r in mocks.resources.values()}
    out: dict[str, dict[str, str]] = {}
    for r in sorted(mocks.resources.values(), key=lambda r: r.name):
        entry = {"type": r.type, "parent": types.get(r.parent, "")}
        if r.custom:
            entry["provider"] = provider_path(r.inputs["__provider"])
        out[r.name] = entry
    return out


def test_provider_paths_resource_names_and_types_are_unchanged(tmp_path: Path) -> None:
    assert contract_of(run(lab_config(tmp_path, masters=2))) == json.loads(CONTRACT.read_text())
