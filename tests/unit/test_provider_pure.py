"""Pure pieces of the providers: CA output parsers (golden data from the lab's real CA),
rule rewrites, installer arguments, dialects, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider import ca, validation
from provider.compile_master_config import MasterConfig
from provider.dialects import dialect_for
from provider.master_steps import install_arguments, parse_config_print
from provider.pe_api import is_pinned, pin_rule, unpin_rule

DATA = Path(__file__).resolve().parents[1] / "data"


def test_puppetserver_ca_list_is_parsed_from_the_real_output() -> None:
    entries = ca.parse_puppetserver_ca_list((DATA / "puppetserver-ca-list-all.txt").read_text())
    c03 = entries["compile03.pelab.test"]
    assert c03.state == "signed"
    assert c03.sans == {"compile03", "compile03.pelab.test"}
    assert c03.extensions == (("pp_auth_role", "pe_compiler"),)
    assert c03.fingerprint.startswith("5E:A7:29:53")
    assert entries["primary.pelab.test"].extensions == (("pp_cli_auth", "true"),)
    line = '    c9.example.com       (SHA256)  AA:BB\talt names: ["DNS:c9", "DNS:c9.example.com"]\n'
    requested = ca.parse_puppetserver_ca_list("Requested Certificates:\n" + line)
    assert requested["c9.example.com"].state == "requested"


def test_puppet_cert_list_is_parsed_in_puppet_5_format() -> None:
    entries = ca.parse_puppet_cert_list((DATA / "puppet-cert-list-all.txt").read_text())
    assert entries["compile02.pelab.test"].state == "signed"
    assert entries["compile02.pelab.test"].sans == {"compile02", "compile02.pelab.test", "puppet", "puppet.pelab.test"}
    mixed = ca.parse_puppet_cert_list(
        '  "new.example.com" (SHA256) AA:BB (alt names: "DNS:new")\n'
        '- "old.example.com" (SHA256) CC:DD (certificate revoked)\n'
    )
    assert mixed["new.example.com"].state == "requested"
    assert mixed["old.example.com"].state == "revoked"


def test_san_matching_is_exact() -> None:
    entry = ca.CaEntry("c1.example.com", "requested", "AA", frozenset({"c1", "c1.example.com", "puppet"}))
    assert ca.sans_match(entry, "c1.example.com", ["c1", "puppet"])
    assert not ca.sans_match(entry, "c1.example.com", ["c1"])
    assert not ca.sans_match(entry, "c1.example.com", ["c1", "puppet", "extra"])
    plain = ca.CaEntry("c1.example.com", "signed", "AA", frozenset({"c1.example.com"}))
    assert ca.sans_match(plain, "c1.example.com", [])


def test_ca_commands_follow_the_dialect_and_refusals_are_explained() -> None:
    assert ca.sign_command("puppet-cert", "c1") == ["puppet", "cert", "--allow-dns-alt-names", "sign", "c1"]
    assert ca.sign_command("puppetserver-ca", "c1") == ["puppetserver", "ca", "sign", "--certname", "c1"]
    assert ca.clean_command("puppetserver-ca", "c1")[:3] == ["puppetserver", "ca", "clean"]
    out = "Error: CSR 'c1' contains subject alternative names (DNS:c1), which are disallowed."
    assert "allow-subject-alt-names" in (ca.refusal_reason(out) or "")
    assert ca.refusal_reason("Error: connection refused") is None


def test_rule_rewrites_pin_once_and_unpin_cleanly() -> None:
    rule = ["or", ["=", "name", "primary.example.com"]]
    pinned = pin_rule(rule, "c1.example.com")
    assert pinned == ["or", ["=", "name", "primary.example.com"], ["=", "name", "c1.example.com"]]
    assert pin_rule(pinned, "c1.example.com") == pinned
    assert is_pinned(pinned, "c1.example.com") and not is_pinned(rule, "c1.example.com")
    assert unpin_rule(pinned, "c1.example.com") == rule
    assert unpin_rule(["or", ["=", "name", "c1.example.com"]], "c1.example.com") is None
    assert pin_rule(None, "c1") == ["or", ["=", "name", "c1"]]
    assert pin_rule(["and", ["~", "name", "x"]], "c1") == ["or", ["and", ["~", "name", "x"]], ["=", "name", "c1"]]


@pytest.mark.parametrize(
    ("version", "cli", "group", "classification", "tokens"),
    [
        ("3.7", "puppet-cert", "PE Master", "rule", False),
        ("2015.3", "puppet-cert", "PE Master", "rule", True),
        ("2016.4", "puppet-cert", "PE Master", "pin", True),
        ("2019.1", "puppetserver-ca", "PE Master", "pin", True),
        ("2019.8", "puppetserver-ca", "PE Compiler", "trusted", True),
    ],
)
def test_dialects(version: str, cli: str, group: str, classification: str, tokens: bool) -> None:
    d = dialect_for(version)
    assert (d.ca_cli, d.node_group, d.classification, d.tokens_supported) == (cli, group, classification, tokens)


def test_install_arguments_are_pe_section_key_values() -> None:
    cfg = MasterConfig.from_props(
        {
            "host": "h",
            "ssh_private_key": "k",
            "certname": "c1.example.com",
            "dns_alt_names": ["c1", "puppet"],
            "environmentpath": "/etc/puppetlabs/code/environments",
            "primary_host": "p",
            "primary_ssh_private_key": "k",
            "primary_certname": "p.example.com",
            "pe_version": "2019.8",
            "classifier_url": "https://c:4433",
        }
    )
    assert install_arguments(cfg) == [
        "agent:certname=c1.example.com",
        "main:dns_alt_names=c1,puppet",
        "main:environmentpath=/etc/puppetlabs/code/environments",
        "extension_requests:pp_auth_role=pe_compiler",
        "--puppet-service-ensure",
        "stopped",
        "--puppet-service-enable",
        "false",
    ]
    assert "ssh_private_key='k'" not in repr(cfg)  # secrets never in repr


def test_config_print_parsing() -> None:
    text = "server = primary.example.com\ncertname = c1.example.com\nhostcert = /x/c1.pem\n"
    assert parse_config_print(text)["certname"] == "c1.example.com"


@pytest.mark.parametrize("name", ["a b", "a;b", "$(x)", "`x`", "a|b", "-rf", "a..b", "", "a" * 64])
def test_hostile_names_are_not_dns_names(name: str) -> None:
    assert validation.dns_name_error(name) is not None


def test_validation_accepts_real_names_and_ports() -> None:
    assert validation.dns_name_error("compile-01.example.com") is None
    assert validation.host_error("10.0.0.5") is None
    assert validation.port_error(22.0) is None and validation.port_error(0) and validation.port_error(True)
    assert validation.server_name_error("compile01.example.com") is None
    assert validation.server_name_error("bad name;") is not None


def test_remote_deadline_stops_the_command_and_its_children_on_the_host(tmp_path: Path) -> None:
    import subprocess
    import time

    from provider.ssh import DEADLINE_EXIT_STATUSES, with_remote_deadline

    pidfile = tmp_path / "child.pid"
    line = f"sleep 60 & echo $! > {pidfile}; wait; echo 'never; $(id)'"
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", with_remote_deadline(line, 1)], capture_output=True, text=True, timeout=30)
    assert done.returncode in DEADLINE_EXIT_STATUSES and time.monotonic() - started < 15
    child = int(pidfile.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"  # the background child went too
    # A command that finishes in time keeps its status and output; quoting survives.
    quick = subprocess.run(
        ["sh", "-c", with_remote_deadline("printf '%s' \"a b;\" '$(id)'; exit 3", 5)], capture_output=True, text=True
    )
    assert (quick.returncode, quick.stdout) == (3, "a b;$(id)")
