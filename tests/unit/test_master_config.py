"""PeCompileMaster's inputs read in one pass (provider/master/config.py `parse`): the
problems check() shows, or the typed config create builds from; a recorded state is read
as it is."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.runtime.rpc import UNKNOWN

from provider.core.errors import ProviderError
from provider.master.config import DEFAULTS, MasterConfig, parse, problems

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvgnmOCadR3PMuYFkFeH0ZhKkDk6JfZ4lbPvmtfvsml"


def valid(**changes: Any) -> dict[str, Any]:
    return {
        "host": "c1.example.com",
        "ssh_private_key": "key",
        "ssh_known_hosts": f"c1.example.com {HOST_KEY}\nc2.example.com {HOST_KEY}\n",  # peers' keys too
        "certname": "c1.example.com",
        "dns_alt_names": ["c1", "puppet"],
        "primary_host": "primary.example.com",
        "primary_ssh_private_key": "key",
        "primary_ssh_host_key": HOST_KEY,
        "primary_certname": "primary.example.com",
        "database_host": "primary.example.com",
        "database_ssh_private_key": "key",
        "database_ssh_host_key": HOST_KEY,
        "pe_version": "2019.8",
        "classifier_url": "https://console.example.com:4433",
        "rbac_token": "token",
        "peer_masters": ["c2.example.com c2.example.com"],
        **changes,
    }


def test_valid_inputs_build_the_config_with_defaults_for_what_is_left_out() -> None:
    cfg = parse(valid(run_timeout=60)).valid()
    assert cfg.certname == "c1.example.com" and cfg.dns_alt_names == ["c1", "puppet"]
    assert (cfg.target.host, cfg.target.port, cfg.target.user) == ("c1.example.com", 22, "root")
    assert cfg.database_target is not None and cfg.database_target.host == "primary.example.com"
    assert cfg.run_timeout == 60.0 and cfg.install_timeout == float(DEFAULTS["install_timeout"])
    assert [(p.certname, p.target.host, p.target.private_key) for p in cfg.peer_masters] == [
        ("c2.example.com", "c2.example.com", "key")
    ]
    assert cfg.resource_name == "c1.example.com" and cfg.generation.compiler_puppetdb
    assert cfg == MasterConfig.from_props(valid(run_timeout=60))  # a state reads the same


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"certname": "Compile01"}, "certname"),
        ({"certname": "primary.example.com"}, "certname"),
        ({"dns_alt_names": "c1"}, "dns_alt_names"),
        ({"dns_alt_names": ["c1", "c1"]}, "dns_alt_names"),
        ({"pe_version": "2014.1"}, "pe_version"),
        ({"database_host": ""}, "database_host"),
        ({"availability_group": "C"}, "availability_group"),
        ({"pe_version": "2018.1", "availability_group": "A"}, "availability_group"),
        ({"rbac_token": ""}, "rbac_token"),
        ({"classifier_url": "http://console.example.com:4433"}, "classifier_url"),
        ({"run_timeout": 0}, "run_timeout"),
        ({"primary_ssh_port": "22x"}, "primary_ssh_port"),
        ({"primary_ssh_host_key": ""}, "primary_ssh_host_key"),
        ({"ssh_known_hosts": f"c1.example.com {HOST_KEY}\n"}, "peer_masters"),  # no key for the peer
        ({"peer_masters": ["c1.example.com c1.example.com"]}, "peer_masters"),
    ],
)
def test_a_bad_input_is_named_and_no_config_is_built(change: dict[str, Any], key: str) -> None:
    parsed = parse(valid(**change))
    assert [k for k, _ in parsed.problems] == [key]
    assert parsed.problems == problems(valid(**change))  # what check() shows
    with pytest.raises(ProviderError, match=key):
        parsed.valid()


def test_a_value_known_only_at_apply_is_not_judged_and_builds_nothing() -> None:
    parsed = parse(valid(host=UNKNOWN, certname=UNKNOWN, run_timeout=UNKNOWN))
    assert parsed.problems == []
    with pytest.raises(ProviderError, match="not known yet"):
        parsed.valid()


def test_a_recorded_state_is_read_as_it_is() -> None:
    # An older version recorded what today's check refuses (no host key, no database host):
    # update, read and delete still work from it.
    state = valid(ssh_known_hosts="", peer_masters=[], database_host="", rbac_token="")
    assert [k for k, _ in problems(state)] == ["ssh_host_key", "database_host", "rbac_token"]
    cfg = MasterConfig.from_props(state)
    assert cfg.database_target is None and cfg.target.known_hosts == ""
