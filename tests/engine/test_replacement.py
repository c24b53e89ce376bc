"""Replacing a compile master under the engine's rules, through the real provider server
and the program's real graph (no lab: every resource's state is seeded healthy, and no
call here may reach a host).

The engine replaces PeCompileMaster delete-before-replace (a certname cannot exist twice)
and, before deleting it, deletes the dependents that calculateDependentReplacements pulls
in: those with an input depending on the master whose Diff, with that input unknown,
answers replace (pulumi/pulumi pkg/resource/deploy/step_generator.go). The pool member
must be one of them - drained before the master's certificate is revoked; nothing else
may be (the deployment's InfraRefresh and PoolAdmission stay).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_program_graph import lab_config, run
from tests.harness.graph import GraphRun
from tests.harness.provider_server import ProviderServer

HEALTHY = {
    "-master": {"status": "running", "cert_fingerprint": "AA:BB", "cert_serial": "7"},
    "-pool": {"status": "UP"},
    "-code": {"status": "in sync"},
    "infra-refresh": {"status": "whitelisted"},
    "provisioning": {"status": "provisioned"},
    "pool-admission": {"status": "admitted"},
}


def healthy(name: str) -> dict[str, Any]:
    return next(v for k, v in HEALTHY.items() if name.endswith(k))


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer(env={"PE_COMPILE_MASTERS_TRACE": "1"}) as srv:
        yield srv


def seeded(server: ProviderServer, tmp_path: Path) -> GraphRun:
    graph = GraphRun(server)
    graph.seed(run(lab_config(tmp_path, masters=2)), healthy)
    return graph


def test_replacing_a_master_pulls_in_its_pool_member_only(server: ProviderServer, tmp_path: Path) -> None:
    graph = seeded(server, tmp_path)
    assert graph.dependent_replacements("compile01.pelab.test-master") == ["compile01.pelab.test-pool"]


def test_an_alt_name_change_previews_as_the_masters_replacement(server: ProviderServer, tmp_path: Path) -> None:
    graph = seeded(server, tmp_path)
    config = lab_config(tmp_path, masters=2)
    config["pe:compileMasters"][0]["dnsAltNames"] = ["compile01", "puppet-new"]
    plan = graph.preview(run(config))
    assert plan["compile01.pelab.test-master"] == "replace"
    assert plan["lab-provisioning"] == "update"  # records the new entry; leaves compile01 to the replacement
    changed = {name: op for name, op in plan.items() if op != "same"}
    assert changed == {"compile01.pelab.test-master": "replace", "lab-provisioning": "update"}
    assert "[trace] ssh-connect" not in server.text()  # a preview connects nowhere


def test_a_master_update_leaves_the_pool_member_alone(server: ProviderServer, tmp_path: Path) -> None:
    """The member's server_name is the master's certname output, which a preview knows for
    an update (the engine hands back the inputs as outputs): no false replacement."""
    graph = seeded(server, tmp_path)
    config = lab_config(tmp_path, masters=2)
    config["pe:timeouts"] = {**(config.get("pe:timeouts") or {}), "run": 1234}
    plan = graph.preview(run(config))
    assert plan["compile01.pelab.test-master"] == "update"
    assert {n for n, op in plan.items() if op == "replace"} == set()
    assert plan["compile01.pelab.test-pool"] == "same"


def test_what_a_preview_shows_on_scale_out_and_scale_in(server: ProviderServer, tmp_path: Path) -> None:
    """README, "The main job": the operations a preview lists when a master is added or removed."""
    graph = seeded(server, tmp_path)
    out = graph.preview(run(lab_config(tmp_path, masters=3)))
    assert {n: op for n, op in out.items() if op != "same"} == {
        **{f"compile03.pelab.test-{r}": "create" for r in ("code", "master", "pool")},
        "lab-provisioning": "update",  # masters gains compile03 (provisioned there)
        "lab-infra-refresh": "update",  # masters gains it: PuppetDB and console run once more
        "lab-pool-admission": "update",  # members gains it (added and health-gated there)
        "compile01.pelab.test-master": "update",  # peer_masters gains it: recorded, no remote work
        "compile02.pelab.test-master": "update",
    }
    out = graph.preview(run(lab_config(tmp_path, masters=1)))
    assert {n: op for n, op in out.items() if op != "same"} == {
        **{f"compile02.pelab.test-{r}": "delete" for r in ("code", "master", "pool")},
        "lab-provisioning": "update",
        "lab-infra-refresh": "update",
        "lab-pool-admission": "update",
        "compile01.pelab.test-master": "update",
    }
