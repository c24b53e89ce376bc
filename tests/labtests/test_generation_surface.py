"""Facts about the lab's generation profiles (lab/generations.py): each refusal a PE
generation makes is made by the lab too, seen from a non-login SSH shell as the product
sees it. Each test fails if the lab is made lenient again (Debian's /usr/bin/puppet left
visible, `puppet ssl` answered on Puppet 5, `/puppet-ca/v1` on a 3.7 primary's 8140, a
whitelist file left on 2021.7, tokens that never expire, PE-PostgreSQL letting in a
certificate that pg_ident.conf does not map)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest
import requests

from lab.client import LabClient, LabHost
from lab.generations import profile_for
from lab.inhost.pelab_common import wait_for
from provider.core.errors import ClassifierError
from provider.pe.classifier import Classifier, ClassifierAuth, is_pinned
from tests.labtests.helpers import PRIMARY, clean_on_ca, enroll, install_agent, on_generation, pdb_get, puppetserver

pytestmark = pytest.mark.lab


def run_installer(lab: LabClient, host: LabHost, args: list[str]) -> tuple[int, str]:
    """install.bash as PE documents it, verified against the PE CA; (exit, output)."""
    host.put("/tmp/pe-ca.pem", Path(lab.ca_file).read_bytes())
    result = host.run(
        f"curl -sSf --cacert /tmp/pe-ca.pem https://{PRIMARY}:8140/packages/current/install.bash"
        f" | bash -s -- {shlex.join(args)}"
    )
    return result.exit_status, result.stdout + result.stderr


def on_ca(lab: LabClient, certname: str) -> str:
    return lab.host("primary").run(f"{puppetserver(lab)} ca list --all").stdout


def test_a_bare_host_has_no_puppet_until_the_installer_lays_out_pe(lab: LabClient) -> None:
    host = lab.host("compile10")
    clean_on_ca(lab, host.fqdn)
    host.wipe_agent()
    bare = host.run("puppet --version")
    assert bare.exit_status == 127  # nothing on a non-login PATH
    assert host.run("ls /usr/bin/puppet /opt/puppetlabs/bin/puppet").exit_status != 0
    # PE 2016.4.9+: with the service stopped no initial run happens, so no CSR (PE docs).
    code, out = run_installer(lab, host, [f"main:certname={host.fqdn}", "--puppet-service-ensure", "stopped"])
    assert code == 0, out
    assert host.fqdn not in on_ca(lab, host.fqdn)
    assert host.run("/opt/puppetlabs/bin/puppet --version").check().stdout.strip() == "6.28.0"  # PE 2019.8
    assert host.run("readlink /usr/local/bin/puppet").check().stdout.strip() == "/opt/puppetlabs/bin/puppet"
    assert host.run("ls /usr/local/bin/puppetserver /opt/puppetlabs/bin/puppetserver").exit_status != 0
    host.wipe_agent()
    assert host.run("puppet --version").exit_status == 127


def test_puppetserver_is_never_on_a_non_login_path(lab: LabClient) -> None:
    primary = lab.host("primary")
    bare = primary.run("puppetserver ca list --all")
    assert bare.exit_status == 127, bare
    assert primary.run("/opt/puppetlabs/bin/puppetserver ca list --all").check().stdout.count(PRIMARY) >= 1
    assert primary.run("puppet --version").check().stdout.strip() == "6.28.0"  # linked into /usr/local/bin


def test_puppet_5_has_no_puppet_ssl_and_submits_with_puppet_certificate(lab: LabClient) -> None:
    host = lab.host("compile10")
    with on_generation(lab, "2018.1", host):
        install_agent(lab, host, ["compile10"])  # Puppet 5: `puppet certificate generate`
        assert f'"{host.fqdn}"' in lab.host("primary").run("puppet cert list").check().stdout
        refused = host.run("puppet ssl submit_request")
        assert refused.exit_status == 1 and "Unknown Puppet subcommand 'ssl'" in refused.stderr
        assert host.run("puppet --version").check().stdout.strip() == "5.5.22"
        # Puppet Server 5 has no `ca` subcommand: the CA is `puppet cert` on the primary.
        no_ca = lab.host("primary").run(f"{puppetserver(lab)} ca list --all")
        assert no_ca.exit_status == 1 and "Unknown subcommand 'ca'" in no_ca.stderr
        assert host.run("puppet config delete --section main dns_alt_names").exit_status == 0  # Puppet 5.4+


def test_pe_2016_4_has_no_puppet_config_delete(lab: LabClient) -> None:
    host = lab.host("compile10")
    with on_generation(lab, "2016.4.9", host):  # an installer with the service flags
        install_agent(lab, host, ["compile10"])
        refused = host.run("puppet config delete --section main dns_alt_names")
        assert refused.exit_status == 1 and "does not respond to action delete" in refused.stderr
        assert "dns_alt_names = compile10" in (host.read("/etc/puppet/puppet.conf") or "")


def test_pe_3_7_has_its_own_layout_no_puppet_ssl_and_an_installer_without_service_flags(lab: LabClient) -> None:
    host = lab.host("compile10")
    with on_generation(lab, "3.7", host):
        code, out = run_installer(lab, host, [f"main:certname={host.fqdn}", "--puppet-service-ensure", "stopped"])
        assert code != 0 and "unrecognised argument '--puppet-service-ensure'" in out
        code, out = run_installer(lab, host, [f"main:certname={host.fqdn}", "extension_requests:pp_auth_role=x"])
        assert code != 0 and "unknown section 'extension_requests'" in out
        # PE 3.7's installer runs Puppet (so a CSR) and leaves pe-puppet running.
        code, out = run_installer(lab, host, [f"main:certname={host.fqdn}", "main:dns_alt_names=compile10"])
        assert code == 0, out
        assert f'"{host.fqdn}"' in lab.host("primary").run("puppet cert list").check().stdout
        assert host.run("service pe-puppet status").exit_status == 0
        assert host.run("readlink /usr/local/bin/puppet").check().stdout.strip() == "/opt/puppet/bin/puppet"
        assert host.run("ls /opt/puppetlabs/bin/puppet").exit_status != 0
        refused = host.run("puppet ssl submit_request")
        assert refused.exit_status == 1 and "Unknown Puppet subcommand 'ssl'" in refused.stderr
        assert host.run("puppet --version").check().stdout.strip() == "3.8.7"
        host.run("service pe-puppet stop").check()
        # Puppet Server 1.x: the CA's old API only; no /puppet-ca/v1, no status service.
        assert primary_get(lab, "/puppet-ca/v1/certificate/ca").status_code == 404
        assert primary_get(lab, "/status/v1/simple").status_code == 404
        old_api = primary_get(lab, "/production/certificate/ca")
        assert old_api.status_code == 200 and old_api.text == Path(lab.ca_file).read_text()
        # PuppetDB 2.x: /v3/commands, and no /pdb/... API yet.
        assert pdb_post(lab, "/pdb/cmd/v1", deactivate_v3(host.fqdn)).status_code == 404
        assert pdb_post(lab, "/v3/commands", deactivate_v3(host.fqdn)).status_code == 400  # v2 takes a string
        done = pdb_post(lab, "/v3/commands", {"command": "deactivate node", "version": 2, "payload": host.fqdn})
        assert done.status_code == 200


def primary_get(lab: LabClient, path: str) -> requests.Response:
    """A GET on the primary's 8140 with its own certificate (any CA route would allow it)."""
    return requests.get(
        f"https://{PRIMARY}:8140{path}",
        headers={"Accept": "text/plain"},
        cert=lab.host("primary").cert_files(),
        verify=lab.ca_file,
        timeout=30,
    )


def test_puppet_server_2_and_later_serve_puppet_ca_v1_on_8140(lab: LabClient) -> None:
    assert primary_get(lab, "/puppet-ca/v1/certificate/ca").text == Path(lab.ca_file).read_text()
    assert primary_get(lab, "/status/v1/simple").text == "running"


def deactivate_v3(certname: str) -> dict[str, object]:
    payload = {"certname": certname, "producer_timestamp": "2026-01-01T00:00:00.000Z"}
    return {"command": "deactivate node", "version": 3, "payload": payload}


def pdb_post(lab: LabClient, path: str, body: dict[str, object]) -> requests.Response:
    """A PuppetDB command as the primary sends it (its certificate is in the allowlist)."""
    return requests.post(
        f"https://{lab.role_host('puppetdb').fqdn}:8081{path}",
        json=body,
        cert=lab.host("primary").cert_files(),
        verify=lab.ca_file,
        timeout=30,
    )


def test_puppetdb_3_and_later_has_only_the_pdb_api(lab: LabClient) -> None:
    assert pdb_post(lab, "/v3/commands", deactivate_v3("nobody.pelab.test")).status_code == 404
    assert pdb_post(lab, "/pdb/cmd/v1", deactivate_v3("nobody.pelab.test")).status_code == 200


def test_pe_2021_7_writes_allowlists_and_no_whitelists(lab: LabClient) -> None:
    with on_generation(lab, "2021.7"):
        for role, wanted, old in (
            ("puppetdb", "certificate-allowlist", "certificate-whitelist"),
            ("console", "rbac-certificate-allowlist", "rbac-certificate-whitelist"),
        ):
            directory = "puppetdb" if role == "puppetdb" else "console-services"
            listed = lab.role_host(role).read(f"/etc/puppetlabs/{directory}/{wanted}")
            assert listed is not None and "primary.pelab.test" in listed
            assert lab.role_host(role).read(f"/etc/puppetlabs/{directory}/{old}") is None
        # PuppetDB enforces the allowlist: the primary (listed) is let in.
        assert pdb_get(lab, "/pdb/query/v4/nodes").status_code == 200
    assert lab.role_host("puppetdb").read("/etc/puppetlabs/puppetdb/certificate-whitelist") is not None
    assert lab.role_host("puppetdb").read("/etc/puppetlabs/puppetdb/certificate-allowlist") is None


def test_rbac_tokens_expire(lab: LabClient) -> None:
    url = f"{lab.console_url()}/rbac-api/v1/auth/token"
    groups = f"{lab.console_url()}/classifier-api/v1/groups"
    short = requests.post(url, json={**lab.admin_credentials(), "lifetime": "1s"}, verify=lab.ca_file, timeout=30)
    assert short.status_code == 200
    token = short.json()["token"]
    time.sleep(1.5)
    expired = requests.get(groups, headers={"X-Authentication": token}, verify=lab.ca_file, timeout=30)
    assert expired.status_code == 401 and expired.json()["kind"] == "puppetlabs.rbac/token-expired"
    # Without a lifetime the generation's default applies (1 hour from 2019.7): usable now.
    default = requests.post(url, json=lab.admin_credentials(), verify=lab.ca_file, timeout=30).json()["token"]
    fine = requests.get(groups, headers={"X-Authentication": default}, verify=lab.ca_file, timeout=30)
    assert fine.status_code == 200
    # The product says what happened and what to do, not "check the token".
    classifier = Classifier(lab.console_url(), Path(lab.ca_file).read_text(), ClassifierAuth(token, "", ""))
    with pytest.raises(ClassifierError) as refused, classifier.opened() as opened:
        opened.group_by_name("PE Master")
    assert "has expired" in str(refused.value) and "puppet access login --lifetime" in str(refused.value)


def pg_ident_lines(certname: str) -> str:
    """peadm's three lines for a compiler (plans/add_compiler.pp)."""
    return "".join(
        f"pe-puppetdb-pe-puppetdb{suffix}-map {certname} pe-puppetdb{suffix}\n" for suffix in ("", "-migrator", "-read")
    )


def test_a_compiler_puppetdb_without_its_pg_ident_lines_is_refused_by_pe_postgresql(lab: LabClient) -> None:
    """PE 2019.7+: a compiler's PuppetDB authenticates to PE-PostgreSQL with its Puppet
    certificate, and only the lines peadm adds to pg_ident.conf let it in."""
    host = lab.host("compile12")
    database = lab.role_host("database")
    ident = profile_for("2021.7").postgresql_data + "/pg_ident.conf"
    pdb = f"{lab.root}/inhost/bin/pelab-pe-puppetdb"
    with on_generation(lab, "2021.7", host):
        enroll(lab, host, ["compile12"])
        try:
            assert host.fqdn not in (database.read(ident) or "")
            host.run(f"{pdb} start").check()
            dsn = (
                f"host={database.fqdn} dbname=pe-puppetdb user=pe-puppetdb sslmode=verify-full"
                f" sslrootcert=/etc/puppetlabs/puppetdb/ssl/ca.pem"
                f" sslcert=/etc/puppetlabs/puppetdb/ssl/{host.fqdn}.cert.pem"
                f" sslkey=/etc/puppetlabs/puppetdb/ssl/{host.fqdn}.private_key.pem"
            )
            refused = host.run(f"psql -X -At -c 'select current_user' {shlex.quote(dsn)}")
            assert refused.exit_status != 0
            assert 'certificate authentication failed for user "pe-puppetdb"' in refused.stderr
            status = requests.get(
                f"https://{host.fqdn}:8081/status/v1/services/puppetdb-status", verify=lab.ca_file, timeout=30
            )
            assert status.status_code == 503 and status.json()["state"] != "running"
            # peadm's lines and a reload: the same certificate is let in.
            database.run(f"printf %s {shlex.quote(pg_ident_lines(host.fqdn))} >> {ident}").check()
            database.run("service pe-postgresql reload").check()
            assert host.run(f"psql -X -At -c 'select current_user' {shlex.quote(dsn)}").check().stdout.strip() == (
                "pe-puppetdb"
            )
            assert wait_for(lambda: host.run(f"{pdb} ready").exit_status == 0, 30)
        finally:
            host.run(f"{pdb} stop")
            database.run(f"awk '$2 != \"{host.fqdn}\"' {ident} > /tmp/ident && cat /tmp/ident > {ident}").check()
            database.run("service pe-postgresql reload")
            host.wipe_agent()
            clean_on_ca(lab, host.fqdn)


def test_a_token_without_node_group_permissions_is_refused_with_the_permission_it_needs(lab: LabClient) -> None:
    """RBAC: a user whose role only views node groups (PE's built-in Viewers) gets 403 for
    pinning and unpin-from-all; the product names the permission and the role to grant."""
    url = f"{lab.console_url()}/rbac-api/v1/auth/token"
    viewer = {"login": "viewer", "password": lab.admin_credentials()["password"], "lifetime": "1h"}
    token = requests.post(url, json=viewer, verify=lab.ca_file, timeout=30).json()["token"]
    classifier = Classifier(lab.console_url(), Path(lab.ca_file).read_text(), ClassifierAuth(token, "", ""))
    with classifier.opened() as opened:
        group = opened.group_by_name("PE Master")  # viewing is allowed
        with pytest.raises(ClassifierError) as refused:
            opened.unpin_from_all("nobody.pelab.test")
        text = str(refused.value)
        assert "HTTP 403" in text and "node_groups:edit_child_rules" in text and "Operators" in text, text
        with pytest.raises(ClassifierError) as pinning:
            opened.pin(group, "nobody.pelab.test", endpoint=True)
        assert "Edit child group rules" in str(pinning.value) and "parent of PE Master" in str(pinning.value)
        assert token not in text
    assert not is_pinned(lab.classifier().group("PE Master")["rule"], "nobody.pelab.test")
