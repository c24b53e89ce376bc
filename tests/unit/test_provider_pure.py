"""Pure pieces of the providers: CA output parsers (golden data from the lab's real CA),
rule rewrites, installer arguments, validation (PE generations: test_generation.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from provider.core import validation
from provider.master import runs
from provider.master.agent import install_arguments
from provider.master.config import MasterConfig
from provider.pe import ca
from provider.pe.classifier import is_pinned, pin_rule, unpin_rule
from provider.pe.primary import parse_config_print
from tests.unit.certs import key_and_cert

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


def test_refusals_are_explained() -> None:
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
        "main:certname=c1.example.com",
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


@pytest.mark.parametrize("with_timeout", [True, False], ids=["timeout(1)", "perl (RHEL 5, SLES 11)"])
def test_remote_deadline_stops_the_command_and_its_children_on_the_host(tmp_path: Path, with_timeout: bool) -> None:
    """Both ways: coreutils' timeout(1), and Perl on a host whose coreutils has none (a PATH
    here without timeout stands for it)."""
    import os
    import shutil as sh
    import subprocess
    import time

    from provider.ssh.deadline import DEADLINE_EXIT_STATUSES
    from provider.ssh.session import with_remote_deadline

    env = dict(os.environ)
    if not with_timeout:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        for tool in ("sh", "perl", "sleep", "printf", "id", "cat"):
            found = sh.which(tool)
            assert found, tool
            (bindir / tool).symlink_to(found)
        env["PATH"] = str(bindir)
        assert sh.which("timeout", path=str(bindir)) is None

    def run(line: str, seconds: float) -> subprocess.CompletedProcess[str]:
        command = ["/bin/sh", "-c", with_remote_deadline(line, seconds)]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env, check=False)

    pidfile = tmp_path / "child.pid"
    line = f"sleep 60 & echo $! > {pidfile}; wait; echo 'never; $(id)'"
    started = time.monotonic()
    done = run(line, 1)
    assert done.returncode in DEADLINE_EXIT_STATUSES and time.monotonic() - started < 15, done.stderr
    child = int(pidfile.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"  # the background child went too
    # A command that finishes in time keeps its status, output and stdin; quoting survives.
    quick = run("printf '%s' \"a b;\" '$(id)'; exit 3", 5)
    assert (quick.returncode, quick.stdout) == (3, "a b;$(id)"), quick.stderr
    piped = subprocess.run(
        ["/bin/sh", "-c", with_remote_deadline("cat", 5)], input="in", capture_output=True, text=True, env=env
    )
    assert (piped.returncode, piped.stdout) == (0, "in")
    # A signal to the watchdog (sshd's HUP, a TERM) reaches the command's whole group.
    import signal

    pidfile.unlink()
    watched = subprocess.Popen(["/bin/sh", "-c", with_remote_deadline(line, 60)], env=env)
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    watched.send_signal(signal.SIGTERM)
    watched.wait(timeout=15)
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"


def test_download_cert_script_installs_only_a_certificate_for_the_hosts_own_key(tmp_path: Path) -> None:
    """Run the script for real against a local HTTP server standing for the CA's endpoint:
    the certificate of the host's own key is installed (0644); one for another key is
    refused, and an HTTP error (no certificate yet) fails with the CA's answer; nothing left."""
    import functools
    import http.server
    import subprocess
    import threading

    key, cert = key_and_cert(tmp_path, "c1.example.com")
    _, foreign = key_and_cert(tmp_path, "other")
    served = tmp_path / "ca" / "puppet-ca" / "v1" / "certificate"
    served.mkdir(parents=True)
    hostcert = tmp_path / "certs" / "c1.example.com.pem"
    hostcert.parent.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "ca"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/puppet-ca/v1/certificate"

    def download(body: bytes | None, name: str = "c1.example.com") -> subprocess.CompletedProcess[str]:
        if body is not None:
            (served / name).write_bytes(body)
        script = ca.download_cert_script(
            f"{base}/{name}", "c1.example.com", "/nonexistent-ca.pem", str(hostcert), str(key)
        )
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)

    try:
        refused = download(foreign)
        assert refused.returncode == 3 and "does not match this host's private key" in refused.stderr
        assert list(hostcert.parent.iterdir()) == []  # no certificate, no temp file
        missing = download(None, "not-signed-yet")
        assert missing.returncode == 22 and "HTTP 404 from the CA" in missing.stderr
        assert "File not found" in missing.stderr  # the server's own reason is kept
        assert list(hostcert.parent.iterdir()) == []
        installed = download(cert)
        assert installed.returncode == 0, installed.stderr
        assert hostcert.read_bytes() == cert and oct(hostcert.stat().st_mode & 0o777) == "0o644"
        assert list(hostcert.parent.iterdir()) == [hostcert]
    finally:
        server.shutdown()


def test_ca_api_commands_verify_tls_and_keep_each_value_one_argument() -> None:
    client = ca.ApiClient("primary.example.com", "/ssl/certs/p.pem", "/ssl/private_keys/p.pem", "/ssl/certs/ca.pem")
    listing = ca.api_status_command(client, "c1.example.com")
    # One certname: the CA's cost does not grow with its size (never certificate_statuses/any_key).
    assert listing[-1] == "https://primary.example.com:8140/puppet-ca/v1/certificate_status/c1.example.com"
    assert "--fail-with-body" not in listing and listing[listing.index("-w") + 1] == "\\n%{http_code}"
    assert "-k" not in listing and "--insecure" not in listing
    assert listing[listing.index("--cacert") + 1] == "/ssl/certs/ca.pem"
    assert listing[listing.index("--cert") + 1] == "/ssl/certs/p.pem"
    argv, body = ca.api_sign_command(client, "c1.example.com")
    assert argv[-1].endswith("/puppet-ca/v1/certificate_status/c1.example.com") and "PUT" in argv
    assert json.loads(body) == {"desired_state": "signed"}


def test_ca_api_statuses_parse_to_what_the_cli_lists() -> None:
    """Golden JSON from the lab's real CA (certificate_statuses/any_key); the expected
    values are what `puppetserver ca list --all` printed for the same CA state."""
    entries = ca.parse_statuses_json((DATA / "ca-certificate-statuses.json").read_text())
    requested = entries["compile14.pelab.test"]
    assert requested.state == "requested"
    assert requested.fingerprint.startswith("9E:75:0A:0D:D0:90:66:6F") and requested.fingerprint.endswith("8A:A5:BC")
    assert requested.sans == {"compile14", "compile14.pelab.test"}
    assert requested.extensions == (("pp_auth_role", "pe_compiler"),)
    signed = entries["compile15.pelab.test"]
    assert signed.state == "signed" and signed.fingerprint.startswith("34:4F:9F:34")
    assert signed.sans == {"compile15", "compile15.pelab.test", "puppet"}
    assert ca.sans_match(signed, "compile15.pelab.test", ["compile15", "puppet"])
    revoked = entries["compile16.pelab.test"]
    assert revoked.state == "revoked" and revoked.fingerprint.startswith("FE:D5:DA:DE")
    assert entries["primary.pelab.test"].extensions == (("pp_cli_auth", "true"),)
    assert ca.parse_statuses_json("[]") == {}
    one = json.dumps(json.loads((DATA / "ca-certificate-statuses.json").read_text())[0])
    single = ca.parse_status_json(one)
    assert single is not None and entries[single.certname] == single


def test_curl_status_line_becomes_what_fail_with_body_would_have_left() -> None:
    """curl_argv prints the HTTP status after the body; with_http_status turns >= 400 into
    curl's exit 22 with the body kept (the CA's or PuppetDB's reason for the error)."""
    from provider.core.command import CommandResult
    from provider.pe.curl import curl_argv, http_status, with_http_status

    def result(stdout: str, exit_status: int = 0) -> CommandResult:
        return CommandResult("primary", "curl ...", exit_status, stdout, "")

    ok = with_http_status(result('{"state":"signed"}\n200'))
    assert (ok.exit_status, ok.stdout) == (0, '{"state":"signed"}')
    refused = with_http_status(result("Invalid certificate subject.\n404"))
    assert refused.exit_status == 22 and refused.stdout == "Invalid certificate subject."
    assert "returned error: 404" in refused.stderr
    assert http_status(result("x\n404")) == 404 and http_status(result("", 7)) is None
    assert with_http_status(result("", 7)).exit_status == 7  # no connection: curl's own failure
    assert with_http_status(result("\n000")).exit_status == 22  # no HTTP answer
    assert with_http_status(result("\n204")).stdout == "" and with_http_status(result("\n204")).exit_status == 0
    argv = curl_argv("https://x")
    assert argv[:4] == ["curl", "-sS", "--max-time", "60"] and "-f" not in argv


def _tls_server(tmp: Path, name: str) -> tuple[int, Path, bytes]:
    """A one-shot TLS server on an ephemeral port serving a self-signed certificate for
    `name` (its own CA): returns the port, the CA file and the certificate."""
    import socket
    import ssl
    import threading

    key_path, pem = key_and_cert(tmp, name)
    (tmp / "srv.pem").write_bytes(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "srv.pem", key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)

    def serve() -> None:
        with listener:
            for _ in range(3):
                try:
                    conn, _ = listener.accept()
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                except OSError:
                    continue

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], tmp / "srv.pem", pem


def test_served_certificate_command_verifies_ca_and_name_and_prints_the_served_certificate(tmp_path: Path) -> None:
    """Run the command for real against a local TLS server (port substituted for 8140)."""
    import subprocess

    from provider.core.command import CommandResult
    from provider.master.certs import first_pem_certificate, served_certificate_command, served_identity

    port, cafile, pem = _tls_server(tmp_path, "localhost")

    def handshake(name: str, ca_file: Path) -> subprocess.CompletedProcess[str]:
        argv = served_certificate_command(name, str(ca_file))
        argv[argv.index("-connect") + 1] = f"127.0.0.1:{port}"
        return subprocess.run(argv, input="", capture_output=True, text=True, timeout=30, check=False)

    def identity(name: str, done: subprocess.CompletedProcess[str]) -> bytes | None:
        return served_identity(CommandResult("h", "openssl", done.returncode, done.stdout, done.stderr), name)

    good = handshake("localhost", cafile)
    assert good.returncode == 0, good.stderr
    assert first_pem_certificate(good.stdout) == pem
    assert identity("localhost", good) == pem
    # Not this certname: the handshake completes (no -verify_hostname on OpenSSL 1.0.1), the
    # name check refuses it.
    wrong_name = handshake("compile01.example.com", cafile)
    assert identity("compile01.example.com", wrong_name) is None
    (tmp_path / "other").mkdir()
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(key_and_cert(tmp_path / "other", "localhost")[1])
    assert identity("localhost", handshake("localhost", other_ca)) is None  # not the PE CA
    assert first_pem_certificate("no certificate here") is None


@pytest.mark.skipif(
    shutil.which("puppet") is None, reason="needs the puppet agent (scripts/install-deps.sh installs it)"
)
def test_agent_settings_derived_after_install_are_what_puppet_itself_prints(tmp_path: Path) -> None:
    """Puppet's own settings before and after what install.bash sets (certname, server,
    alt names, CSR attributes), in a scratch confdir: the derivation must agree."""
    import subprocess

    from provider.master.agent import AGENT_SETTINGS, agent_after_install

    dirs = ["--confdir", str(tmp_path / "conf"), "--vardir", str(tmp_path / "var")]
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "puppet.conf").write_text("")

    def settings() -> dict[str, str]:
        out = subprocess.run(
            ["puppet", "config", "print", *AGENT_SETTINGS, "--section", "agent", *dirs],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return parse_config_print(out.stdout)

    before = settings()
    for section, key, value in (
        ("main", "certname", "compile07.example.com"),  # as install.bash now writes it
        ("main", "server", "primary.example.com"),
        ("main", "dns_alt_names", "compile07,puppet"),
    ):
        subprocess.run(["puppet", "config", "set", "--section", section, key, value, *dirs], check=True, timeout=120)
    assert agent_after_install(before, "compile07.example.com", "primary.example.com") == settings()
    custom = {**before, "hostcert": "/etc/custom/cert.pem"}  # not Puppet's layout: read again
    assert agent_after_install(custom, "compile07.example.com", "primary.example.com") is None
    assert agent_after_install({}, "compile07.example.com", "primary.example.com") is None


def test_the_master_run_is_skipped_only_when_the_first_run_applied_the_profile_and_nothing_changed_since() -> None:
    applied = runs.applied_classes("settings\ncompile01.pelab.test\n" + runs.MASTER_CLASS + "\n\n")
    assert runs.MASTER_CLASS in applied and "" not in applied
    # PE 2019.7+: PE Compiler (by pp_auth_role) already put the profile in the first catalog.
    assert not runs.master_run_needed(applied, reclassified=False)
    # Pinned (or PE 3.x's enable_ca_proxy set) after the first run: PE's second run applies it.
    assert runs.master_run_needed(applied, reclassified=True)
    # The first run's catalog had no master profile (not yet pinned), or no classfile was read.
    assert runs.master_run_needed(runs.applied_classes("settings\n"), reclassified=False)
    assert runs.master_run_needed(frozenset(), reclassified=False)


def test_known_hosts_lines_keep_the_texts_order_and_both_name_forms() -> None:
    from provider.ssh.trust import known_hosts_lines

    text = (
        "# a comment\n"
        "a.example.com,10.0.0.1 ssh-ed25519 AAAA1\n"
        "[b.example.com]:2222 ssh-ed25519 AAAA2\n"
        "b.example.com ssh-rsa AAAA3 comment\n"
        "short-line\n"
    )
    assert known_hosts_lines(text, "b.example.com", 2222) == [
        "[b.example.com]:2222 ssh-ed25519 AAAA2",
        "b.example.com ssh-rsa AAAA3",
    ]
    assert known_hosts_lines(text, "10.0.0.1", 22) == ["a.example.com,10.0.0.1 ssh-ed25519 AAAA1"]
    assert known_hosts_lines(text, "c.example.com", 22) == []
