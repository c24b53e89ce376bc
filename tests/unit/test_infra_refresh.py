"""InfraRefresh's plan: PE's order of runs after new masters, one run per host, and the
primary's file sync list (pure: no host)."""

from __future__ import annotations

from typing import Any

import pytest

from provider.core.errors import ProviderError
from provider.infra_refresh import Listing, RefreshConfig, problems
from provider.pe.file_sync_conf import client_certnames
from provider.pe.generation import generation_for

FILE_SYNC = "/etc/puppetlabs/puppetserver/conf.d/file-sync.conf"


def props(**extra: Any) -> dict[str, Any]:
    return {
        "masters": ["c1.example.com"],
        "puppetdb_host": "puppetdb.example.com",
        "puppetdb_ssh_private_key": "k",
        "puppetdb_ssh_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvgnmOCadR3PMuYFkFeH0ZhKkDk6JfZ4lbPvmtfvsml",
        "console_host": "console.example.com",
        "console_ssh_private_key": "k",
        "console_ssh_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvgnmOCadR3PMuYFkFeH0ZhKkDk6JfZ4lbPvmtfvsml",
        **extra,
    }


def primary(host: str = "primary.example.com", **extra: Any) -> dict[str, Any]:
    return {
        "primary_host": host,
        "primary_ssh_private_key": "k",
        "primary_ssh_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvgnmOCadR3PMuYFkFeH0ZhKkDk6JfZ4lbPvmtfvsml",
        "file_sync_conf": FILE_SYNC,
        **extra,
    }


def test_a_split_install_runs_puppetdb_then_the_console_then_the_primary() -> None:
    stages = RefreshConfig.from_props(props(**primary())).stages()
    assert [s.label for s in stages] == ["PuppetDB run", "console run", "primary run"]
    assert stages[-1].listings == (Listing("primary", FILE_SYNC, "file-sync"),)


def test_a_monolithic_install_is_one_run_on_the_primary_that_must_leave_every_list_right() -> None:
    """PE's standard and large architectures: PuppetDB and the console on the primary, and
    PE's procedure says "compile master, master of masters" - one run, not three."""
    mono = props(puppetdb_host="primary.example.com", console_host="primary.example.com", **primary())
    stages = RefreshConfig.from_props(mono).stages()
    assert len(stages) == 1
    assert stages[0].roles == ("PuppetDB", "console", "primary")
    assert stages[0].label == "primary run (PuppetDB, console, primary)"
    assert [lst.role for lst in stages[0].listings] == ["PuppetDB", "console", "primary"]


def test_a_standalone_database_runs_first_then_the_primary_once() -> None:
    """peadm's extra-large layout (and a split install upgraded past 2019.2): PE-PostgreSQL
    on its own host, PuppetDB and the console on the primary."""
    xl = props(
        puppetdb_host="primary.example.com",
        console_host="primary.example.com",
        database_host="pg.example.com",
        database_ssh_private_key="k",
        **primary(),
    )
    assert [s.label for s in RefreshConfig.from_props(xl).stages()] == [
        "database run",
        "primary run (PuppetDB, console, primary)",
    ]


def test_a_host_is_one_host_only_on_the_same_port() -> None:
    two = props(puppetdb_host="primary.example.com", puppetdb_ssh_port=2222, **primary())
    assert [s.label for s in RefreshConfig.from_props(two).stages()] == ["PuppetDB run", "console run", "primary run"]


def test_without_a_primary_the_stages_are_as_before() -> None:
    """Up to PE 2015.2 (and in state written before the primary's run existed)."""
    assert [s.label for s in RefreshConfig.from_props(props()).stages()] == ["PuppetDB run", "console run"]


def test_the_primary_needs_its_key_and_a_pinned_host_key() -> None:
    bad = props(primary_host="primary.example.com")
    keys = {p for p, _ in problems(bad)}
    assert {"primary_ssh_private_key", "primary_ssh_host_key"} <= keys
    assert not problems(props(**primary()))
    assert [p for p, _ in problems(props(**primary(file_sync_conf="conf.d/x")))] == ["file_sync_conf"]


@pytest.mark.parametrize(
    ("version", "runs_primary"),
    [("3.7", False), ("3.8", False), ("2016.4.9", True), ("2018.1", True), ("2019.8", True), ("2025.12", True)],
)
def test_the_primary_runs_from_pe_2015_3(version: str, runs_primary: bool) -> None:
    generation = generation_for(version)
    assert generation.primary_run is runs_primary
    assert generation.file_sync_conf == (FILE_SYNC if runs_primary else "")


def test_file_sync_client_certnames_as_pe_writes_them() -> None:
    text = """# Managed by Puppet
file-sync: {
    client-certnames: [
        "compile01.example.com",
        compile02.example.com
    ]
    repos: { puppet-code: { live-dir: "/etc/puppetlabs/code" } }
}
"""
    assert client_certnames(text, FILE_SYNC) == ["compile01.example.com", "compile02.example.com"]
    assert client_certnames('"file-sync" { "client-certnames": ["a.example.com"] }', FILE_SYNC) == ["a.example.com"]


def test_a_file_without_the_setting_is_not_a_list_to_check() -> None:
    assert client_certnames("", FILE_SYNC) is None
    assert client_certnames("file-sync: { repos: {} }", FILE_SYNC) is None


def test_an_unreadable_file_says_which_and_why() -> None:
    with pytest.raises(ProviderError, match=r"file-sync\.conf is not readable HOCON"):
        client_certnames("file-sync: { client-certnames: [", FILE_SYNC)
    with pytest.raises(ProviderError, match="is not a list of certnames"):
        client_certnames("file-sync: { client-certnames: all }", FILE_SYNC)
