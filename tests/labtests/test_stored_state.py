"""A stack state written by an earlier commit (tests/data/stack-state-v1.json: `pulumi stack
export --show-secrets` format, the lab stack with one master on PE 2021.7) driven with the
current code, as a user's stack is after an upgrade of this project: the engine unpickles
each stored `__provider` blob (by reference to provider.<module>.<Class>), refreshes every
resource and deletes them all. The lab's hosts are first brought to what the state
describes (the current program's `up` of the same stack config).

PELAB_WRITE_STATE=1 writes the file anew from that `up` (only with a migration:
docs/state-contract.md). `<lab:known_hosts>` stands for the whole known_hosts file, as v1 held
it; current inputs hold each host's own lines, so a new write needs a placeholder per
host's lines first (state_file replaces whole texts only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from components.program import main
from lab.client import LabClient
from tests.engine.test_state_contract import provider_path
from tests.harness.graph import GraphRun, engine_inputs
from tests.harness.mocks import RecordingMocks, by_name, run_program
from tests.harness.provider_server import PROVIDER_KEY, ProviderServer, Secret
from tests.harness.state_file import export_state, load_state
from tests.labtests.helpers import bare_masters, lab_stack_config, lb_stats, on_generation

pytestmark = pytest.mark.lab
STATE = Path(__file__).resolve().parents[1] / "data" / "stack-state-v1.json"
GENERATION = "2021.7"
SHORT = "compile02"
CERTNAME = f"{SHORT}.pelab.test"


def lab_values(lab: LabClient, mocks: RecordingMocks) -> dict[str, str]:
    """What differs between labs (and machines), as the program hands it to a master."""
    inputs, _ = engine_inputs(by_name(mocks, f"{CERTNAME}-master"))

    def plain(key: str) -> str:
        value = inputs[key]
        return str(value.value if isinstance(value, Secret) else value)

    return {
        "ssh_private_key": plain("ssh_private_key"),
        "rbac_token": plain("rbac_token"),
        # The whole file the stack config names: stack-state-v1.json's inputs held it in every
        # SSH input (since 53cf611 each holds only its own host's lines; diffs compare keys).
        "known_hosts": lab.known_hosts.read_text(),
        "root": str(lab.root),
    }


def in_this_layout(lab: LabClient, text: str) -> str:
    """v1 was written against the lab's split install (PuppetDB and the console on hosts of
    their own). A deployment's host names are its data, not the code's: they are pointed at
    the hosts holding those roles in the running lab (lab/config.py LAYOUTS)."""
    for role in ("puppetdb", "console"):
        text = text.replace(f"{role}.pelab.test", lab.role_host(role).fqdn)
    return text


def test_a_stored_state_refreshes_and_deletes_with_the_current_code(lab: LabClient) -> None:
    bare_masters(lab, (SHORT,))
    config = lab_stack_config(lab, (SHORT,), **{"pe:version": GENERATION})
    with ProviderServer() as server, on_generation(lab, GENERATION):
        mocks = run_program(main, stack="lab", config=config)
        values = lab_values(lab, mocks)
        current = GraphRun(server)
        current.up(mocks)  # the hosts as the stored state describes them
        try:
            if os.environ.get("PELAB_WRITE_STATE") == "1":
                STATE.write_text(json.dumps(export_state(current, mocks, values), indent=1, sort_keys=True) + "\n")
            text = STATE.read_text()
            stored = json.loads(in_this_layout(lab, text))
            assert not any(v in text for v in values.values())  # no lab's secrets or paths
            old = GraphRun(server)
            load_state(old, stored, values)
            assert set(old.engines) == set(current.engines)
            for engine in old.engines.values():
                assert provider_path(engine.provider_blob).startswith("provider.")
                assert engine.state is not None and engine.state.inputs[PROVIDER_KEY] == engine.provider_blob

            statuses = old.refresh()
            assert all(statuses.values()), statuses  # every resource found: none dropped
            assert statuses[f"{CERTNAME}-pool"] == "UP"
            master = old.outputs(f"{CERTNAME}-master")
            assert master["cert_fingerprint"] == current.outputs(f"{CERTNAME}-master")["cert_fingerprint"]
            assert master["cert_serial"] == current.outputs(f"{CERTNAME}-master")["cert_serial"]

            old.destroy()
        except BaseException:
            current.destroy()
            raise
    assert ("puppet_compilers", CERTNAME) not in lb_stats(lab)
    assert lab.ca_state(CERTNAME) is None
    assert lab.host(SHORT).read("/etc/cron.d/pe-file-sync") is None
