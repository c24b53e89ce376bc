"""The program under `set_mocks`: the resource graph the engine would build from a stack's
config - ordering through depends_on/inputs, one InfraRefresh, secrets, stable names -
and config errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.program import main
from lab.config import roster
from provider.compile_master import INPUT_KEYS
from provider.core import inputs
from provider.master.config import LOCAL_ONLY_KEYS
from tests.harness.mocks import RecordingMocks, Registered, by_name, run_program

ROOT = Path(__file__).resolve().parents[2]
FAKE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvL2tzZOBSbRBlc+ubhaqz4zYl6XYp5oIcGZfQ1f2p5"
PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nprivate-key-body\n-----END OPENSSH PRIVATE KEY-----\n"
TOKEN = "0rbac-token-value"


def lab_config(tmp_path: Path, masters: int = 2, **changes: Any) -> dict[str, Any]:
    """Pulumi.lab.yaml's config with its files pointing into tmp_path."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())["config"]
    (tmp_path / "key").write_text(PRIVATE)
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "known_hosts").write_text("".join(f"{h.fqdn},{h.address} {FAKE_KEY}\n" for h in roster()))
    config["pe:sshPrivateKeyFile"] = str(tmp_path / "key")
    config["pe:rbacTokenFile"] = str(tmp_path / "token")
    config["pe:knownHostsFile"] = str(tmp_path / "known_hosts")
    config["pe:compileMasters"] = [
        {"certname": f"compile0{i}.pelab.test", "address": f"127.0.10.1{i}", "dnsAltNames": [f"compile0{i}"]}
        for i in range(1, masters + 1)
    ]
    config.update(changes)
    return config


def run(config: dict[str, Any]) -> RecordingMocks:
    plain = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    return run_program(main, stack="lab", config=plain)


def custom(mocks: RecordingMocks) -> dict[str, Registered]:
    return {r.name: r for r in mocks.resources.values() if r.custom}


def test_each_member_waits_for_its_master_its_code_and_the_one_refresh(tmp_path: Path) -> None:
    mocks = run(lab_config(tmp_path, masters=3))
    resources = custom(mocks)
    refreshes = [r for r in resources.values() if r.name.endswith("infra-refresh")]
    assert len(refreshes) == 1
    refresh = refreshes[0]
    masters = [f"compile0{i}.pelab.test" for i in (1, 2, 3)]
    for certname in masters:
        code, master, member = (resources[f"{certname}-{s}"] for s in ("code", "master", "pool"))
        component = by_name(mocks, certname)
        assert component.type == "pe:index:CompileMaster" and not component.custom
        assert {code.parent, master.parent, member.parent} == {component.urn}
        assert code.urn in master.dependencies  # code first
        assert {master.urn, code.urn, refresh.urn} <= set(member.dependencies)
        assert master.urn in refresh.dependencies
        assert master.urn in refresh.property_dependencies["masters"]
        assert member.inputs["server_name"] == certname and member.inputs["address"].startswith("127.0.10.1")
        # a property dependency (not only depends_on): the engine's delete-before-replace of the
        # master then pulls the member in (drained first) - see tests/engine/test_replacement.py
        assert member.property_dependencies["server_name"] == [master.urn]
        assert master.inputs["dns_alt_names"] == [certname.split(".")[0], "puppet", "puppet.pelab.test"]
        assert master.inputs["pe_version"] == "2019.8"
        assert code.inputs["method"] == "rsync" and code.inputs["code_dir"] == "/etc/puppet/code"
        # Secrets stay secrets: every key and the token are secret inputs.
        assert {"ssh_private_key", "primary_ssh_private_key", "rbac_token"} <= master.secret_inputs
        assert {"ssh_private_key", "primary_ssh_private_key"} <= code.secret_inputs
        assert "lb_ssh_private_key" in member.secret_inputs
        assert master.inputs["rbac_token"]["value"] == TOKEN  # (recorded as a secret envelope)
    assert sorted(refresh.inputs["masters"]) == masters
    # The long work of all masters is ONE resource (one provider call); each master waits for it.
    batch = resources["lab-provisioning"]
    assert [e["certname"] for e in batch.inputs["masters"]] == masters
    assert {"ssh_private_key", "primary_ssh_private_key", "rbac_token"} <= batch.secret_inputs
    for certname in masters:
        master = resources[f"{certname}-master"]
        assert batch.urn in master.dependencies and master.inputs["batch_provisioned"] is True
    assert {"puppetdb_ssh_private_key", "console_ssh_private_key"} <= refresh.secret_inputs
    # So are the pool adds and their health gate: after the refresh, before every member.
    admission = resources["lab-pool-admission"]
    assert refresh.urn in admission.dependencies and "lb_ssh_private_key" in admission.secret_inputs
    for certname in masters:
        member = resources[f"{certname}-pool"]
        assert admission.urn in member.dependencies
        entry = next(e for e in admission.inputs["members"] if e["server_name"] == certname)
        assert {k: member.inputs[k] for k in entry} == entry
        own = ("members", "resource_name", "__provider", "status", "admitted", "admitted_now")
        shared = {k: v for k, v in admission.inputs.items() if k not in own}
        assert {k: member.inputs.get(k) for k in shared} == shared  # the same LB, backend, checks
    deployment = by_name(mocks, "lab")
    assert deployment.type == "pe:index:PeDeployment"
    assert refresh.parent == deployment.urn


def test_adding_or_removing_a_master_touches_only_its_resources(tmp_path: Path) -> None:
    two = custom(run(lab_config(tmp_path, masters=2)))
    three = custom(run(lab_config(tmp_path, masters=3)))
    one = custom(run(lab_config(tmp_path, masters=1)))
    added = set(three) - set(two)
    assert added == {f"compile03.pelab.test-{s}" for s in ("code", "master", "pool")}
    removed = set(two) - set(one)
    assert removed == {f"compile02.pelab.test-{s}" for s in ("code", "master", "pool")}
    for name in set(one) & set(two):
        if name.endswith("infra-refresh"):
            assert one[name].inputs["masters"] == ["compile01.pelab.test"]  # one more pair of runs
            continue
        if name.endswith("provisioning"):
            assert [e["certname"] for e in one[name].inputs["masters"]] == ["compile01.pelab.test"]
            continue
        if name.endswith("pool-admission"):
            assert [e["server_name"] for e in one[name].inputs["members"]] == ["compile01.pelab.test"]
            continue
        assert one[name].urn == two[name].urn  # same name, same parent: never renamed
        if name.endswith("-master"):  # a survivor's peers change: recorded, no remote work
            assert one[name].inputs["peer_masters"] == []
            assert two[name].inputs["peer_masters"] == ["compile02.pelab.test 127.0.10.12"]
            assert "peer_masters" in LOCAL_ONLY_KEYS
            # its known_hosts loses compile02's line, but what it trusts for itself is the same
            assert inputs.changed_keys(list(INPUT_KEYS), one[name].inputs, two[name].inputs, {}) == ["peer_masters"]
            continue
        assert one[name].inputs == two[name].inputs  # nothing to update for the survivors


def test_zero_masters_is_a_valid_deployment(tmp_path: Path) -> None:
    resources = custom(run(lab_config(tmp_path, masters=0)))
    assert sorted(r.name for r in resources.values()) == ["lab-infra-refresh", "lab-pool-admission", "lab-provisioning"]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"pe:version": "twenty"}, "pe:version"),
        ({"pe:fileSync": {"method": "ftp"}}, "pe:fileSync.method"),
        ({"pe:fileSync": {"method": "r10k"}}, "pe:fileSync.r10kRemote"),
        ({"pe:loadBalancer": {"host": "lb.pelab.test", "backend": "a b"}}, "pe:loadBalancer.backend"),
        ({"pe:primary": {"host": "unknown.example.com"}}, "pe:primary.hostKey"),
        (
            {"pe:compileMasters": [{"certname": "c1.pelab.test", "address": "compile01.pelab.test"}]},
            "pe:compileMasters[0].poolAddress",
        ),
        (
            {"pe:compileMasters": [{"certname": "Bad Name", "address": "127.0.10.11"}]},
            "pe:compileMasters[0].certname",
        ),
        (
            {
                "pe:compileMasters": [
                    {"certname": "compile01.pelab.test", "address": "127.0.10.11"},
                    {"certname": "compile01.pelab.test", "address": "127.0.10.12"},
                ]
            },
            "pe:compileMasters[1].certname",
        ),
        (
            {"pe:compileMasters": [{"certname": "compile01.pelab.test", "address": "127.0.10.11", "weight": 999}]},
            "pe:compileMasters[0].weight",
        ),
        ({"pe:compileMasters": [{"certname": "primary.pelab.test", "address": "127.0.10.2"}]}, "certname"),
        ({"pe:timeouts": {"health": -1}}, "pe:timeouts.health"),
        ({"pe:sshPrivateKeyFile": "/nonexistent/key"}, "pe:sshPrivateKeyFile"),
        ({"pe:colour": "blue"}, "pe:colour"),
    ],
)
def test_wrong_config_fails_naming_the_key(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    with pytest.raises(pulumi.RunError) as failed:
        run(lab_config(tmp_path, **change))
    assert key in str(failed.value)


def test_missing_secrets_fail_naming_the_key(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    del config["pe:rbacTokenFile"]
    with pytest.raises(pulumi.RunError, match="pe:rbacToken: is required"):
        run(config)
    config = lab_config(tmp_path)
    del config["pe:sshPrivateKeyFile"]
    with pytest.raises(pulumi.RunError, match="pe:sshPrivateKey: is required"):
        run(config)


def test_the_prod_example_parses(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "Pulumi.prod.example.yaml").read_text())["config"]
    config["pe:sshPrivateKey"] = PRIVATE  # what `pulumi config set --secret` provides
    config["pe:rbacToken"] = TOKEN
    resources = custom(run(config))
    assert sorted(n for n in resources if n.endswith("-pool")) == [
        "compile01.example.com-pool",
        "compile02.example.com-pool",
    ]
    assert resources["compile02.example.com-pool"].inputs["weight"] == 50
    assert resources["compile01.example.com-code"].inputs["method"] == "r10k"


@pytest.mark.parametrize(
    ("changes", "puppetdb", "console"),
    [
        pytest.param(
            {},
            "/etc/puppetlabs/puppetdb/certificate-whitelist",
            "/etc/puppetlabs/console-services/rbac-certificate-whitelist",
            id="2019.8-whitelist",
        ),
        pytest.param(
            {"pe:version": "2021.7"},
            "/etc/puppetlabs/puppetdb/certificate-allowlist",
            "/etc/puppetlabs/console-services/rbac-certificate-allowlist",
            id="2021.7-allowlist",
        ),
        pytest.param(
            {
                "pe:version": "2021.7",
                "pe:puppetdb": {"host": "puppetdb.pelab.test", "allowlist": "/srv/pdb/allow"},
                "pe:console": {"host": "console.pelab.test", "allowlist": "/srv/console/allow"},
            },
            "/srv/pdb/allow",
            "/srv/console/allow",
            id="override",
        ),
    ],
)
def test_the_refresh_checks_the_generations_allowlists_unless_configured(
    tmp_path: Path, changes: dict[str, Any], puppetdb: str, console: str
) -> None:
    """PE renamed the allow-list files between 2019.x and 2021.1; the input keys keep their
    old names (they are in existing stacks' state)."""
    refresh = custom(run(lab_config(tmp_path, **changes)))["lab-infra-refresh"]
    assert (refresh.inputs["puppetdb_whitelist"], refresh.inputs["console_whitelist"]) == (puppetdb, console)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"pe:puppetdb": {"host": "puppetdb.pelab.test", "allowlist": "relative/path"}}, "pe:puppetdb.allowlist"),
        ({"pe:console": {"host": "console.pelab.test", "allowlist": "/a b"}}, "pe:console.allowlist"),
        ({"pe:primary": {"host": "primary.pelab.test", "allowlist": "/x"}}, "pe:primary.allowlist"),
    ],
)
def test_allowlists_are_validated_and_only_where_they_belong(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    with pytest.raises(pulumi.RunError) as failed:
        run(lab_config(tmp_path, **change))
    assert key in str(failed.value)


# --- PE 2019.7+: PE-PostgreSQL's host (pe:database) ---------------------------------------
DATABASE_INPUTS = {
    "database_host",
    "database_ssh_port",
    "database_ssh_user",
    "database_ssh_private_key",
    "database_ssh_host_key",
    "database_ssh_known_hosts",
}


def test_from_2019_7_every_master_gets_the_database_host_default_the_puppetdb_host(tmp_path: Path) -> None:
    resources = custom(run(lab_config(tmp_path, masters=2)))  # the lab stack: PE 2019.8, no pe:database
    batch = resources["lab-provisioning"]
    assert batch.inputs["database_host"] == "primary.pelab.test"  # pe:puppetdb's host: the primary
    assert (batch.inputs["database_ssh_port"], batch.inputs["database_ssh_user"]) == (22, "root")
    # Each host's trust is its own known_hosts lines (components.compile_master.trust).
    assert [line.split()[0] for line in batch.inputs["database_ssh_known_hosts"].splitlines()] == [
        "primary.pelab.test,127.0.10.2"
    ]
    assert "database_ssh_private_key" in batch.secret_inputs
    for certname in ("compile01.pelab.test", "compile02.pelab.test"):
        master = resources[f"{certname}-master"]
        assert {k: master.inputs.get(k) for k in DATABASE_INPUTS} == {k: batch.inputs.get(k) for k in DATABASE_INPUTS}
        assert "database_ssh_private_key" in master.secret_inputs
    # The database is the PuppetDB host: its run is PuppetDB's, no stage of its own.
    assert not DATABASE_INPUTS & set(resources["lab-infra-refresh"].inputs)


def test_a_database_host_of_its_own_is_passed_and_runs_first_in_the_refresh(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPgDatabaseHostKeyxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    changes: dict[str, Any] = {
        "pe:version": "2021.7",
        "pe:database": {"host": "pg.pelab.test", "port": 2222, "user": "pgadmin", "hostKey": key},
    }
    resources = custom(run(lab_config(tmp_path, **changes)))
    expected = {
        "database_host": "pg.pelab.test",
        "database_ssh_port": 2222,
        "database_ssh_user": "pgadmin",
        "database_ssh_host_key": key,
    }
    for name in ("lab-provisioning", "compile01.pelab.test-master", "lab-infra-refresh"):
        resource = resources[name]
        assert {k: resource.inputs[k] for k in expected} == expected, name
        assert "database_ssh_known_hosts" not in resource.inputs  # pinned instead
        assert "database_ssh_private_key" in resource.secret_inputs, name


def test_before_2019_7_nothing_about_the_database_is_passed(tmp_path: Path) -> None:
    variants: list[dict[str, Any]] = [
        {"pe:version": "2018.1"},
        {"pe:version": "2018.1", "pe:database": {"host": "puppetdb.pelab.test"}},
    ]
    for changes in variants:
        resources = custom(run(lab_config(tmp_path, **changes)))
        for resource in resources.values():
            assert not DATABASE_INPUTS & set(resource.inputs), resource.name


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"pe:database": {"host": "puppetdb.pelab.test", "url": "https://x:5432"}}, "pe:database.url"),
        ({"pe:database": {"host": "puppetdb.pelab.test", "allowlist": "/x"}}, "pe:database.allowlist"),
        ({"pe:database": {"host": "pg.example.com"}}, "pe:database.hostKey"),  # no pinned key, no known_hosts entry
        ({"pe:database": {"host": "bad host"}}, "pe:database.host"),
        ({"pe:database": {"host": "puppetdb.pelab.test", "port": 0}}, "pe:database.port"),
        ({"pe:database": {}}, "pe:database.host"),
        ({"pe:database": "puppetdb.pelab.test"}, "pe:database"),
    ],
)
def test_pe_database_is_host_access_only_and_validated(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    with pytest.raises(pulumi.RunError) as failed:
        run(lab_config(tmp_path, **change))
    assert key in str(failed.value)


def test_the_prod_examples_commented_database_section_parses(tmp_path: Path) -> None:
    """Pulumi.prod.example.yaml shows pe:database commented out; uncommented it is valid."""
    text = (ROOT / "Pulumi.prod.example.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("  # pe:database:")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  #   "):
            break
        block.append(line)
    uncommented = "\n".join(line.replace("  # ", "  ", 1) for line in block)
    config = yaml.safe_load(text.replace("\n".join(block), uncommented))["config"]
    config["pe:sshPrivateKey"] = PRIVATE
    config["pe:rbacToken"] = TOKEN
    provisioning = custom(run(config))["lab-provisioning"]
    assert provisioning.inputs["database_host"] == config["pe:database"]["host"]
    assert provisioning.inputs["database_host"] == config["pe:primary"]["host"]  # standard install: the primary
