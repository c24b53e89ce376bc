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


STORED = Path(__file__).resolve().parents[1] / "data" / "stack-state-v1.json"
RESOURCE_MODULES = {
    "provider.compile_master",
    "provider.compile_master_batch",
    "provider.file_sync",
    "provider.infra_refresh",
    "provider.pool_admission",
    "provider.pool_member",
}


def stored_provider_blobs(node: Any) -> list[str]:
    """Every `__provider` blob of a state file (`{"plaintext": "\\"<base64>\\""}` in a stack export)."""
    if isinstance(node, list):
        return [b for item in node for b in stored_provider_blobs(item)]
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        if key == "__provider" and isinstance(value, dict) and "plaintext" in value:
            found.append(json.loads(value["plaintext"]))
        else:
            found += stored_provider_blobs(value)
    return found


def test_a_state_written_before_the_provider_subpackages_unpickles_with_this_code() -> None:
    """A state written before provider/ had subpackages (issue 17) names only the six
    resource modules, which did not move: every blob still imports to its class."""
    blobs = stored_provider_blobs(json.loads(STORED.read_text()))
    paths = {provider_path(blob) for blob in blobs}
    assert blobs and {p.rsplit(".", 1)[0] for p in paths} == RESOURCE_MODULES, paths
