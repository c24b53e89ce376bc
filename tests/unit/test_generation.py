"""The PE generation model (provider/pe/generation.py) and what the steps build from it:
the table per PE version, command builders with absolute paths, install.bash arguments,
PuppetDB payloads, and the decisions read_agent, the sign step and InfraRefresh's probe
make from what a host answers (a scripted stand-in session: no host needed)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from provider.core.command import CommandResult
from provider.core.errors import ForeignAgentError, ProviderError, SanMismatchError
from provider.master import agent, certificate, certs, context
from provider.master.config import DEFAULTS, MasterConfig
from provider.pe import agent_runs, ca
from provider.pe.generation import PUPPET_BINARIES, Generation, generation_for, puppet_major_for
from provider.pe.primary import Primary
from provider.ssh.session import SshSession
from provider.ssh.trust import SshTarget
from tests.unit.certs import key_and_cert

AIO = "/opt/puppetlabs/bin"
PE3 = "/opt/puppet/bin"
PDB_WL, PDB_AL = "/etc/puppetlabs/puppetdb/certificate-whitelist", "/etc/puppetlabs/puppetdb/certificate-allowlist"
RBAC = "/etc/puppetlabs/console-services/rbac-certificate-"

T, F = True, False
CERT, PSCA, PM, PC = "puppet-cert", "puppetserver-ca", "PE Master", "PE Compiler"
# version: (puppet_major, bin_dir, agent_service, ca_cli, node_group, classification, tokens,
#           extension_requests?, allowlists?, service_flags, status, lifetime, crl_section)
TABLE: dict[str, tuple[Any, ...]] = {
    "3.7": (3, PE3, "pe-puppet", CERT, PM, "rule", F, F, F, F, F, "", "master"),
    "2015.2": (4, AIO, "puppet", CERT, PM, "rule", F, F, F, F, F, "", "master"),
    "2015.3": (4, AIO, "puppet", CERT, PM, "rule", T, F, F, F, F, "5m", "master"),
    "2016.2": (4, AIO, "puppet", CERT, PM, "pin", T, F, F, F, F, "5m", "master"),  # Puppet Server 2.4
    "2016.4.8": (4, AIO, "puppet", CERT, PM, "pin", T, F, F, F, T, "5m", "master"),  # installer: no flags yet
    "2016.4.9": (4, AIO, "puppet", CERT, PM, "pin", T, F, F, T, T, "5m", "master"),  # 2.6: /status/v1/simple
    "2017.2.4": (5, AIO, "puppet", CERT, PM, "pin", T, F, F, F, T, "5m", "master"),
    "2017.2.5": (5, AIO, "puppet", CERT, PM, "pin", T, F, F, T, T, "5m", "master"),
    "2017.3": (5, AIO, "puppet", CERT, PM, "pin", T, F, F, T, T, "5m", "master"),
    "2018.1": (5, AIO, "puppet", CERT, PM, "pin", T, F, F, T, T, "5m", "master"),
    "2019.8": (6, AIO, "puppet", PSCA, PC, "trusted", T, T, F, T, T, "1h", "server"),
    "2021.7": (7, AIO, "puppet", PSCA, PC, "trusted", T, T, T, T, T, "1h", "server"),
    "2023.8": (8, AIO, "puppet", PSCA, PC, "trusted", T, T, T, T, T, "1h", "server"),
    "2025.1": (8, AIO, "puppet", PSCA, PC, "trusted", T, T, T, T, T, "1h", "server"),
}  # fmt: skip


@pytest.mark.parametrize("version", sorted(TABLE))
def test_the_generation_table(version: str) -> None:
    (major, bin_dir, service, cli, group, classification, tokens, extensions, allowlist, flags,
     status, lifetime, crl) = TABLE[version]  # fmt: skip
    g = generation_for(version)
    assert g.label == f"PE {version}" and g.pe_version == tuple(int(p) for p in version.split("."))
    assert (g.puppet_major, g.bin_dir, g.agent_service) == (major, bin_dir, service)
    assert (g.puppet_bin, g.puppetserver_bin) == (f"{bin_dir}/puppet", f"{bin_dir}/puppetserver")
    assert (g.ca_cli, g.node_group, g.classification, g.tokens_supported) == (cli, group, classification, tokens)
    assert g.ca_bin == (g.puppetserver_bin if cli == "puppetserver-ca" else g.puppet_bin)
    assert g.extension_requests == ((("pp_auth_role", "pe_compiler"),) if extensions else ())
    assert (g.puppetdb_allowlist, g.console_allowlist) == (
        (PDB_AL, RBAC + "allowlist") if allowlist else (PDB_WL, RBAC + "whitelist")
    )
    assert (g.install_service_flags, g.status_endpoint) == (flags, status)
    assert (g.token_lifetime_default, g.crl_section) == (lifetime, crl)


def test_a_stack_may_name_only_supported_lines_with_the_patch_level_a_step_depends_on() -> None:
    from provider.pe.generation import check_pe_version, pe_line

    assert check_pe_version("2019.8.12") == (2019, 8, 12) and check_pe_version("3.7") == (3, 7)
    assert check_pe_version("2025.3.0") == (2025, 3, 0) and check_pe_version("2016.4.9") == (2016, 4, 9)
    for unknown in ("2015.2", "2017.3.1", "2019.5", "2019.7.0", "2022.1"):
        with pytest.raises(ValueError, match=r"not a PE line this provider supports \(3\.7\.x, 3\.8\.x, 2016\.4\.x"):
            check_pe_version(unknown)
    with pytest.raises(ValueError, match=r"needs its patch level .*2016\.4\.9"):
        check_pe_version("2016.4")
    assert pe_line("2019.8.12") == "2019.8" == pe_line("2019.8")


def test_a_patch_upgrade_updates_masters_in_place_a_new_line_replaces_them() -> None:
    from provider.master.config import replaces_master

    assert not replaces_master("pe_version", "2019.8.5", "2019.8.12")
    assert not replaces_master("pe_version", "2016.4.9", "2016.4.15")
    assert replaces_master("pe_version", "2019.8.12", "2021.7.4")
    assert replaces_master("certname", "a", "b") and not replaces_master("ssh_port", 22, 2222)


def test_generation_boundaries_and_overrides() -> None:
    assert [puppet_major_for(v) for v in ((3, 8), (2016, 5), (2018, 1), (2019, 0), (2021, 0), (2023, 0))] == [
        3, 4, 5, 6, 7, 8,
    ]  # fmt: skip
    assert generation_for("2015.3").tokens_supported and generation_for("2015.3").token_lifetime_default == "5m"
    assert generation_for("2016.1").classification == "pin" and not generation_for("2016.1").install_service_flags
    assert (
        generation_for("2019.5").node_group == "PE Master" and generation_for("2019.5").token_lifetime_default == "5m"
    )
    assert generation_for("2019.8.4", node_group="Compilers").node_group == "Compilers"
    assert (
        generation_for("2021.0").puppetdb_allowlist == PDB_WL and generation_for("2021.1").puppetdb_allowlist == PDB_AL
    )
    assert (f"{AIO}/puppet", f"{PE3}/puppet") == PUPPET_BINARIES  # newest first: InfraRefresh's probe order
    with pytest.raises(ValueError, match=r"older than PE 3\.7"):
        generation_for("3.3")


PG_IDENT_MAPS = (
    ("pe-puppetdb-pe-puppetdb-map", "pe-puppetdb"),
    ("pe-puppetdb-pe-puppetdb-migrator-map", "pe-puppetdb-migrator"),
    ("pe-puppetdb-pe-puppetdb-read-map", "pe-puppetdb-read"),
)


@pytest.mark.parametrize(
    ("version", "compiler_puppetdb"),
    [("3.7", F), ("2016.4", F), ("2018.1", F), ("2019.5", F), ("2019.7", T), ("2019.8", T), ("2021.7", T),
     ("2023.8", T), ("2025.1", T)],
)  # fmt: skip
def test_compilers_run_their_own_puppetdb_from_2019_7(version: str, compiler_puppetdb: bool) -> None:
    """pe-generations.md §6 [S29], peadm plans/add_compiler.pp: the pg_ident.conf maps of
    PuppetDB's three roles, on PE-PostgreSQL's running cluster, reloaded as pe-postgresql."""
    g = generation_for(version)
    assert g.compiler_puppetdb is compiler_puppetdb
    assert g.pg_ident_maps == (PG_IDENT_MAPS if compiler_puppetdb else ())
    assert g.postgresql_data_glob == "/opt/puppetlabs/server/data/postgresql/*/data"
    assert g.postgresql_service == "pe-postgresql"
    # A node group of one's own does not change what the database needs.
    assert generation_for(version, node_group="Compilers").compiler_puppetdb is compiler_puppetdb


@pytest.mark.parametrize(
    ("version", "command"),
    [
        ("3.7", [f"{PE3}/puppet", "certificate", "generate", "c1.example.com", "--ca-location", "remote"]),
        ("2016.4", [f"{AIO}/puppet", "certificate", "generate", "c1.example.com", "--ca-location", "remote"]),
        ("2018.1", [f"{AIO}/puppet", "certificate", "generate", "c1.example.com", "--ca-location", "remote"]),
        ("2019.8", [f"{AIO}/puppet", "ssl", "submit_request", "--certname", "c1.example.com"]),
        ("2023.8", [f"{AIO}/puppet", "ssl", "submit_request", "--certname", "c1.example.com"]),
    ],
)
def test_csr_command_per_generation(version: str, command: list[str]) -> None:
    assert generation_for(version).csr_command("c1.example.com") == command


def test_ca_commands_run_the_ca_cli_by_its_absolute_path() -> None:
    old, new = generation_for("2018.1"), generation_for("2019.8")
    assert ca.sign_command(old.ca_cli, old.ca_bin, "c1") == [
        f"{AIO}/puppet",
        "cert",
        "--allow-dns-alt-names",
        "sign",
        "c1",
    ]
    assert ca.clean_command(old.ca_cli, old.ca_bin, "c1") == [f"{AIO}/puppet", "cert", "clean", "c1"]
    assert ca.list_command(old.ca_cli, old.ca_bin, "c1") == [f"{AIO}/puppet", "cert", "list", "c1"]
    pe3 = generation_for("3.7")
    assert ca.sign_command(pe3.ca_cli, pe3.ca_bin, "c1")[0] == f"{PE3}/puppet"
    assert ca.sign_command(new.ca_cli, new.ca_bin, "c1") == [f"{AIO}/puppetserver", "ca", "sign", "--certname", "c1"]
    assert ca.clean_command(new.ca_cli, new.ca_bin, "c1") == [f"{AIO}/puppetserver", "ca", "clean", "--certname", "c1"]
    assert ca.list_command(new.ca_cli, new.ca_bin, "c1") == [f"{AIO}/puppetserver", "ca", "list", "--certname", "c1"]


def test_cleaning_through_the_ca_api_revokes_a_signed_certificate_then_deletes_it() -> None:
    """What `puppetserver ca clean` sends, with the primary's own certificate (never -k)."""
    client = ca.ApiClient("primary.example.com", "/ssl/cert.pem", "/ssl/key.pem", "/ssl/ca.pem")
    url = "https://primary.example.com:8140/puppet-ca/v1/certificate_status/c1"
    (revoke, body), (delete, nothing) = ca.api_clean_commands(client, "c1", signed=True)
    assert revoke[-1] == url and revoke[revoke.index("-X") + 1] == "PUT" and "--cacert" in revoke
    assert json.loads(body or b"") == {"desired_state": "revoked"}
    assert delete[-3:] == ["-X", "DELETE", url] and nothing is None
    assert [argv[-2:] for argv, _ in ca.api_clean_commands(client, "c1", signed=False)] == [["DELETE", url]]


def test_the_signed_certificate_is_fetched_where_the_generations_ca_serves_it() -> None:
    assert generation_for("3.8").certificate_path("c1.example.com") == "/production/certificate/c1.example.com"
    for version in ("2015.2", "2019.8"):
        assert generation_for(version).certificate_path("c1") == "/puppet-ca/v1/certificate/c1"


def test_deactivate_payloads_follow_puppetdb() -> None:
    path, body = generation_for("3.8").deactivate_command("c1.example.com", "2026-01-01T00:00:00.000Z")
    assert (path, body) == ("/v3/commands", {"command": "deactivate node", "version": 2, "payload": "c1.example.com"})
    for version in ("2015.2", "2019.8", "2025.1"):
        path, body = generation_for(version).deactivate_command("c1.example.com", "2026-01-01T00:00:00.000Z")
        assert path == "/pdb/cmd/v1"
        assert body == {
            "command": "deactivate node",
            "version": 3,
            "payload": {"certname": "c1.example.com", "producer_timestamp": "2026-01-01T00:00:00.000Z"},
        }
        json.dumps(body)  # what curl sends


def master_props(version: str = "2019.8", **changes: Any) -> dict[str, Any]:
    """A compile master's inputs, every one given (the defaults where the test sets none)."""
    return {
        **DEFAULTS,
        "host": "c1.example.com",
        "ssh_private_key": "k",
        "certname": "c1.example.com",
        "dns_alt_names": ["c1", "puppet"],
        "environmentpath": "/etc/puppetlabs/code/environments",
        "primary_host": "primary.example.com",
        "primary_ssh_private_key": "k",
        "primary_certname": "primary.example.com",
        "pe_version": version,
        "classifier_url": "https://console.example.com:4433",
        **changes,
    }


def master_config(version: str = "2019.8", **changes: Any) -> MasterConfig:
    return MasterConfig.from_props(master_props(version, **changes))


@pytest.mark.parametrize(
    ("version", "extension", "flags"),
    [
        ("3.7", False, False),
        ("2016.1", False, False),
        ("2016.4.8", False, False),
        ("2016.4.9", False, True),
        ("2019.8", True, True),
    ],
)
def test_install_arguments_per_generation(version: str, extension: bool, flags: bool) -> None:
    expected = [
        "main:certname=c1.example.com",
        "main:dns_alt_names=c1,puppet",
        "main:environmentpath=/etc/puppetlabs/code/environments",
        *(["extension_requests:pp_auth_role=pe_compiler"] if extension else []),
        *(["--puppet-service-ensure", "stopped", "--puppet-service-enable", "false"] if flags else []),
    ]
    assert agent.install_arguments(master_config(version)) == expected


def test_a_peadm_availability_group_is_requested_as_peadm_does_and_checked() -> None:
    """peadm's component_install requests pp_auth_role and peadm_availability_group (by its
    OID, which PE Compiler Group A/B's rules match); a letter other than A/B, or a group on
    a generation without PE Compiler, is refused at check()."""
    from provider.master.config import problems

    cfg = master_config("2021.7", availability_group="B")
    assert agent.install_arguments(cfg)[3] == "extension_requests:pp_auth_role=pe_compiler"
    assert cfg.extension_requests[-1] == ("1.3.6.1.4.1.34380.1.1.9813", "B")
    assert cfg.availability_node_group == "PE Compiler Group B"
    base = master_props("2021.7")
    assert ("availability_group", "availability_group must be A or B (peadm's letters), not 'C'") in problems(
        {**base, "availability_group": "C"}
    )
    old = problems({**base, "pe_version": "2018.1", "availability_group": "A"})
    assert any(k == "availability_group" and "PE 2019.7+" in why for k, why in old)
    assert not [p for p in problems({**base, "availability_group": "A"}) if p[0] == "availability_group"]


def test_the_classifier_refusal_hint_speaks_the_generation() -> None:
    assert "5m" in context.classifier_refusal_hint(generation_for("2018.1"))
    assert "1h" in context.classifier_refusal_hint(generation_for("2021.7"))
    assert RBAC + "allowlist" in context.classifier_refusal_hint(generation_for("2021.7"))
    old = context.classifier_refusal_hint(generation_for("3.7"))
    assert "no RBAC tokens" in old and RBAC + "whitelist" in old


# --- decisions from what a host answers ----------------------------------------------------
Answer = tuple[int, str]


class ScriptedHost:
    """Stands in for SshSession: `answer(command)` -> (exit status, stdout); records commands."""

    def __init__(self, answer: Callable[[str], Answer], label: str = "c1.example.com"):
        self.answer = answer
        self.commands: list[str] = []
        self.target = SshTarget(label, 22, "root", "")
        self.files: dict[str, bytes] = {}

    def run(self, command: str | Sequence[str], timeout: float = 600.0, stdin: bytes | None = None) -> CommandResult:
        line = command if isinstance(command, str) else " ".join(command)
        self.commands.append(line)
        status, out = self.answer(line)
        return CommandResult(self.target.label, line, status, out, "")

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = data

    def get(self, path: str) -> bytes | None:
        return self.files.get(path)


def session(host: ScriptedHost) -> SshSession:
    return cast(SshSession, host)


SETTINGS = {
    "server": "primary.example.com",
    "certname": "c1.example.com",
    "hostcert": "/etc/puppetlabs/puppet/ssl/certs/c1.example.com.pem",
    "hostprivkey": "/etc/puppetlabs/puppet/ssl/private_keys/c1.example.com.pem",
    "hostcsr": "/etc/puppetlabs/puppet/ssl/certificate_requests/c1.example.com.pem",
    "localcacert": "/etc/puppetlabs/puppet/ssl/certs/ca.pem",
    "agent_catalog_run_lockfile": "/opt/puppetlabs/puppet/cache/state/agent_catalog_run.lock",
    "csr_attributes": "/etc/puppetlabs/puppet/csr_attributes.yaml",
    "ssldir": "/etc/puppetlabs/puppet/ssl",
    "config": "/etc/puppetlabs/puppet/puppet.conf",
    "classfile": "/opt/puppetlabs/puppet/cache/state/classes.txt",
}
PRINTED = "".join(f"{k} = {v}\n" for k, v in SETTINGS.items())


def scripted_context(host: ScriptedHost, version: str = "2019.8", ca_view: object | None = None) -> context.Context:
    primary = ScriptedHost(lambda _line: (0, ""), "primary.example.com")
    return context.Context(
        master_config(version),
        session(host),
        session(primary),
        lambda _step, _what: None,
        ca=cast(Primary, ca_view) if ca_view is not None else None,
    )


def probing(present: Sequence[str], printed: Answer = (0, PRINTED)) -> Callable[[str], Answer]:
    def answer(line: str) -> Answer:
        if line.startswith("for p in "):
            return 0, "".join(f"{p}\n" for p in present)
        if " config print " in line:
            return printed
        raise AssertionError(f"unexpected command {line!r}")

    return answer


def test_read_agent_no_puppet_at_all_means_no_agent_and_nothing_else_is_run() -> None:
    host = ScriptedHost(probing([]))
    assert context.read_agent(scripted_context(host)) == {}
    assert len(host.commands) == 1 and "/opt/puppetlabs/bin/puppet" in host.commands[0]


def test_read_agent_reads_the_settings_with_the_generations_puppet() -> None:
    host = ScriptedHost(probing([f"{AIO}/puppet"]))
    ctx = scripted_context(host)
    assert context.read_agent(ctx) == SETTINGS == ctx.agent
    assert (
        host.commands[1].startswith(f"{AIO}/puppet config print ") and "agent_catalog_run_lockfile" in host.commands[1]
    )
    pe3 = ScriptedHost(probing([f"{PE3}/puppet"]))
    context.read_agent(scripted_context(pe3, "3.7"))
    assert pe3.commands[1].startswith(f"{PE3}/puppet config print ")


@pytest.mark.parametrize("status", [127, 1, 126])
def test_read_agent_a_puppet_that_cannot_print_its_settings_is_an_error_never_no_agent(status: int) -> None:
    host = ScriptedHost(probing([f"{AIO}/puppet"], (status, "")))
    with pytest.raises(ProviderError, match="cannot tell whether/which Puppet agent is configured") as failed:
        context.read_agent(scripted_context(host))
    assert f"exit {status}" in str(failed.value)


def test_read_agent_incomplete_settings_are_an_error() -> None:
    host = ScriptedHost(probing([f"{AIO}/puppet"], (0, "server = primary.example.com\n")))
    with pytest.raises(ProviderError, match="did not show certname"):
        context.read_agent(scripted_context(host))


def test_read_agent_another_generations_agent_is_refused_not_installed_over() -> None:
    host = ScriptedHost(probing([f"{PE3}/puppet"]))
    with pytest.raises(ForeignAgentError, match="/opt/puppet/bin/puppet"):
        context.read_agent(scripted_context(host))


def test_the_probe_script_reports_executables_in_order(tmp_path: Path) -> None:
    first, second, plain = tmp_path / "a b" / "puppet", tmp_path / "b" / "puppet", tmp_path / "c"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text("#!/bin/sh\n")
    second.chmod(0o755)
    plain.write_text("")  # not executable
    paths = [str(first), str(second), str(plain), str(tmp_path / "missing")]
    done = subprocess.run(["sh", "-c", agent_runs.probe_script(paths)], capture_output=True, text=True, check=True)
    assert agent_runs.parse_probe(done.stdout, paths) == [str(second)]
    first.chmod(0o755)
    done = subprocess.run(["sh", "-c", agent_runs.probe_script(paths)], capture_output=True, text=True, check=True)
    assert agent_runs.parse_probe(done.stdout, paths) == [str(first), str(second)]


def test_infra_refresh_finds_puppet_or_names_the_host_and_both_paths() -> None:
    for present, found in (([f"{AIO}/puppet", f"{PE3}/puppet"], f"{AIO}/puppet"), ([f"{PE3}/puppet"], f"{PE3}/puppet")):
        assert agent_runs.locate_puppet(session(ScriptedHost(probing(present), "puppetdb.example.com"))) == found
    with pytest.raises(ProviderError) as failed:
        agent_runs.locate_puppet(session(ScriptedHost(probing([]), "puppetdb.example.com")))
    message = str(failed.value)
    assert "puppetdb.example.com" in message and f"{AIO}/puppet" in message and f"{PE3}/puppet" in message


def test_agent_runs_use_the_lockfile_setting_and_never_guess() -> None:
    host = ScriptedHost(lambda line: (1, "") if line.startswith("test -s") else (0, ""))
    ctx = scripted_context(host)
    with pytest.raises(ProviderError, match="agent_catalog_run_lockfile"):
        context.agent_run(ctx, session(host), "first agent run", 60)
    assert host.commands == []
    ctx.agent = dict(SETTINGS)
    context.agent_run(ctx, session(host), "first agent run", 60)
    assert host.commands == [
        f"test -s {SETTINGS['agent_catalog_run_lockfile']}",
        f"{AIO}/puppet agent {' '.join(agent_runs.RUN_FLAGS)}",
    ]


class ScriptedCa:
    """Stands in for Primary: the CA's entries per read (by certname), and signing."""

    sign_method = "the CA's HTTP API"

    def __init__(self, listings: list[dict[str, ca.CaEntry]]):
        self.listings = listings
        self.signed: list[str] = []

    def entry(self, certname: str, timeout: float, log: object) -> ca.CaEntry | None:
        return self.listings.pop(0).get(certname)

    def sign(self, certname: str, timeout: float) -> CommandResult:
        self.signed.append(certname)
        return CommandResult("primary.example.com", "sign", 0, "", "")


@pytest.mark.parametrize("version", ["2018.1", "2019.8"])
def test_the_first_sign_pass_after_install_submits_the_csr_itself_and_keeps_the_key(version: str) -> None:
    """install.bash with --puppet-service-ensure stopped submits no CSR: the CA has no
    entry, the host no key. The step submits one with the generation's tool (which makes
    the key), then signs that request - no error, and no key ever removed."""
    files: set[str] = set()
    generation = generation_for(version)

    def answer(line: str) -> Answer:
        if line.startswith("test -s "):
            return (0 if line.split()[-1] in files else 1), ""
        if line.startswith("set -e; if test -e"):  # the stale CSR/certificate removal
            return 0, ""
        if line == " ".join(generation.csr_command("c1.example.com")):
            files.update({SETTINGS["hostprivkey"], SETTINGS["hostcsr"]})
            return 0, ""
        if line.startswith("openssl req -in "):
            return 0, "SHA2-256(stdin)= aabb\n"
        raise AssertionError(f"unexpected command {line!r}")

    host = ScriptedHost(answer)
    sans = frozenset({"c1", "puppet", "c1.example.com"})
    requested = ca.CaEntry("c1.example.com", "requested", "AA:BB", sans, generation.extension_requests)
    view = ScriptedCa([{}, {"c1.example.com": requested}])
    ctx = scripted_context(host, version, view)
    ctx.agent = dict(SETTINGS)
    certificate.sign_certificate(ctx)
    assert view.signed == ["c1.example.com"]
    assert " ".join(generation.csr_command("c1.example.com")) in host.commands
    assert not [c for c in host.commands if "rm " in c and SETTINGS["hostprivkey"] in c]
    stale = next(c for c in host.commands if c.startswith("set -e; if test -e"))
    assert SETTINGS["hostcsr"] in stale and SETTINGS["hostcert"] in stale


def test_the_stale_request_removal_removes_only_what_is_there(tmp_path: Path) -> None:
    csr, cert, key = tmp_path / "csr.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    for path in (csr, key):
        path.write_text("x")
    script = agent.remove_stale_script({"hostcsr": str(csr), "hostcert": str(cert)})
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["hostcsr"] and not csr.exists() and key.exists()
    assert subprocess.run(["sh", "-c", agent.remove_stale_script({})], check=False).returncode == 0


PUPPET_CONF = """\
# managed by hand
server = old-primary.example.com
[main]
certname = c1.example.com
  dns_alt_names = c1,puppet
server_list = a,b
environmentpath = /etc/puppetlabs/code/environments
[agent]
server=primary.example.com
runinterval = 30m
[master]
certname = keep.example.com
"""


def test_puppet_conf_is_stripped_in_one_command(tmp_path: Path) -> None:
    """Every generation (PE before 2018.1 has no `puppet config delete`, and from then it is a
    Ruby start-up per key and section): one awk removes exactly those keys
    from [main] and [agent] (lines before the first header are [main]'s), keeping the
    rest, comments, other sections and the file's mode."""
    conf = tmp_path / "puppet dir" / "puppet.conf"
    conf.parent.mkdir()
    conf.write_text(PUPPET_CONF)
    conf.chmod(0o640)
    script = agent.puppet_conf_strip_script(str(conf), agent.AGENT_CONFIG_KEYS, agent.AGENT_CONFIG_SECTIONS)
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert conf.read_text() == (
        "# managed by hand\n[main]\nserver_list = a,b\n[agent]\nruninterval = 30m\n"
        "[master]\ncertname = keep.example.com\n"
    )
    assert oct(conf.stat().st_mode & 0o777) == "0o640" and list(conf.parent.iterdir()) == [conf]  # no temp left
    missing = agent.puppet_conf_strip_script(str(tmp_path / "none.conf"), ("server",), ("main",))
    assert subprocess.run(["sh", "-c", missing], check=False).returncode == 0


def test_generation_is_frozen_data() -> None:
    g = generation_for("2019.8")
    assert isinstance(g, Generation)
    with pytest.raises(AttributeError):
        g.bin_dir = "/usr/bin"  # type: ignore[misc]


def test_a_request_without_the_requested_extensions_is_never_signed() -> None:
    """PE 2019.7+: PE Compiler matches pp_auth_role=pe_compiler in the certificate. A CSR
    without it (csr_attributes.yaml missing when it was made) would make a master no group
    matches: refused, naming what is missing and how to clean it."""

    def answer(line: str) -> Answer:
        if line.startswith("test -s "):
            return 0, ""
        if line.startswith("openssl req -in "):
            return 0, "SHA2-256(stdin)= aabb\n"
        raise AssertionError(f"unexpected command {line!r}")

    host = ScriptedHost(answer)
    bare = ca.CaEntry("c1.example.com", "requested", "AA:BB", frozenset({"c1", "puppet", "c1.example.com"}))
    view = ScriptedCa([{"c1.example.com": bare}])
    ctx = scripted_context(host, "2019.8", view)
    ctx.agent = dict(SETTINGS)
    with pytest.raises(SanMismatchError) as refused:
        certificate.sign_certificate(ctx)
    assert "lacks the requested extension(s) pp_auth_role=pe_compiler" in str(refused.value)
    assert view.signed == []


def test_issued_certificates_are_read_for_their_authorization_extensions(tmp_path: Path) -> None:
    role = "1.3.6.1.4.1.34380.1.3.13"
    _, pem = key_and_cert(tmp_path, "c1.example.com", {role: b"\x0c\x0bpe_compiler"})  # DER UTF8String
    issued = certs.IssuedCert.from_pem(pem)
    assert issued.extensions == (("pp_auth_role", "pe_compiler"),)
    generation = generation_for("2019.8")
    assert certs.missing_extensions(issued.extensions, generation.extension_requests) == []
    plain = certs.IssuedCert.from_pem(key_and_cert(tmp_path, "c2.example.com")[1])
    assert certs.missing_extensions(plain.extensions, generation.extension_requests) == ["pp_auth_role=pe_compiler"]
    assert certs.missing_extensions(plain.extensions, generation_for("2018.1").extension_requests) == []
