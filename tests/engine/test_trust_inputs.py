"""What an SSH connection trusts is a resource's input, not the stack's known_hosts file:
each resource gets its host's lines only (components.compile_master.trust), and every diff
compares the keys pinned for the host (provider.core.inputs.trust_view). Driven through the real
provider server on the program's real graph, every resource's state seeded healthy; no call
here may reach a host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.test_program_graph import custom, lab_config, run
from tests.engine.test_replacement import seeded
from tests.harness.provider_server import ProviderServer

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherHostKeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer(env={"PE_COMPILE_MASTERS_TRACE": "1"}) as srv:
        yield srv


def test_every_known_hosts_input_holds_its_own_hosts_lines_only(tmp_path: Path) -> None:
    resources = custom(run(lab_config(tmp_path, masters=3)))
    texts = [
        value
        for r in resources.values()
        for key, value in r.inputs.items()
        if key.endswith("known_hosts") and isinstance(value, str)
    ]
    master = resources["compile01.pelab.test-master"].inputs
    # a master's own text lists it first, then the peers its "certname host" entries name
    assert master["peer_masters"] == ["compile02.pelab.test 127.0.10.12", "compile03.pelab.test 127.0.10.13"]
    assert [line.split(",")[0] for line in master["ssh_known_hosts"].splitlines()] == [
        f"compile0{i}.pelab.test" for i in (1, 2, 3)
    ]
    masters = {r.inputs["ssh_known_hosts"] for r in resources.values() if r.name.endswith("-master")}
    assert texts and all(len(text.splitlines()) == 1 for text in texts if text not in masters)
    assert master["primary_ssh_known_hosts"].startswith("primary.pelab.test,")
    batch = resources["lab-provisioning"].inputs
    assert [e["ssh_known_hosts"].split(",")[0] for e in batch["masters"]] == [
        f"compile0{i}.pelab.test" for i in (1, 2, 3)
    ]


def test_a_host_key_added_for_another_host_changes_no_resource(server: ProviderServer, tmp_path: Path) -> None:
    graph = seeded(server, tmp_path)
    config = lab_config(tmp_path, masters=2)  # (re)writes the known_hosts file
    with (tmp_path / "known_hosts").open("a") as known:
        known.write(f"compile16.pelab.test,127.0.10.26 {OTHER_KEY}\n")
    plan = graph.preview(run(config))
    assert {name: op for name, op in plan.items() if op != "same"} == {}


def test_a_state_that_holds_the_whole_file_previews_no_change(server: ProviderServer, tmp_path: Path) -> None:
    """Stacks written before this change hold the whole known_hosts text in every SSH input
    (and peer_masters entries without one, the master's own covering them): the first
    preview with this code must say nothing changed, not update 150 resources."""
    graph = seeded(server, tmp_path)
    whole = (tmp_path / "known_hosts").read_text()

    def widen(props: dict[str, object]) -> None:
        for key, value in list(props.items()):
            if key.endswith("known_hosts") and value:
                props[key] = whole
            elif key in ("masters", "peer_masters") and isinstance(value, list):
                for entry in value:
                    if not isinstance(entry, dict):  # InfraRefresh's masters are certnames
                        continue
                    if key == "peer_masters":
                        entry.pop("ssh_known_hosts", None)  # (each entry was a mapping then)
                    elif entry.get("ssh_known_hosts"):
                        entry["ssh_known_hosts"] = whole

    for engine in graph.engines.values():
        assert engine.state is not None
        widen(engine.state.inputs)
        widen(engine.state.outputs)
    plan = graph.preview(run(lab_config(tmp_path, masters=2)))
    assert {name: op for name, op in plan.items() if op != "same"} == {}
    assert "[trace] ssh-connect" not in server.text()


def test_a_changed_host_key_updates_what_connects_to_that_host(server: ProviderServer, tmp_path: Path) -> None:
    graph = seeded(server, tmp_path)
    config = lab_config(tmp_path, masters=2)  # (re)writes the known_hosts file
    known = tmp_path / "known_hosts"
    lines = [
        f"{line.split()[0]} {OTHER_KEY}" if line.startswith("compile01.") else line
        for line in known.read_text().splitlines()
    ]
    known.write_text("".join(f"{line}\n" for line in lines))
    plan = graph.preview(run(config))
    assert {name: op for name, op in plan.items() if op != "same"} == {
        "lab-provisioning": "update",  # its compile01 entry
        "compile01.pelab.test-master": "update",
        "compile01.pelab.test-code": "update",
        "compile02.pelab.test-master": "update",  # records its peer's key (local only)
    }
