"""The lab behaves like the PE deployment it stands for: facts about real hosts.

Each test takes its own compile host so they do not disturb one another.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from lab.client import LabClient
from lab.inhost.pelab_common import wait_for
from tests.labtests.helpers import PRIMARY, clean_on_ca, enroll, install_agent, puppetserver, sign

pytestmark = pytest.mark.lab
MASTER_CLASS = "puppet_enterprise::profile::master"


def test_every_host_answers_ssh_with_its_own_hostname_and_pinned_key(lab: LabClient) -> None:
    for short in ("primary", "console", "puppetdb", "lb", "compile01", "compile16"):
        host = lab.host(short)
        result = host.run("hostname; findmnt -n -o TARGET /etc/puppet").check()
        assert result.stdout.split() == [host.fqdn, "/etc/puppet"]


def test_csr_with_alt_names_is_signed_by_the_real_ca_with_exactly_those_sans(lab: LabClient) -> None:
    host = lab.host("compile02")
    enroll(lab, host, ["compile02", "puppet", "puppet.pelab.test"])
    cert = host.cert()
    assert cert is not None
    # Puppet always adds the certname itself to the SANs of a cert that has alt names.
    assert cert.sans == {"compile02.pelab.test", "compile02", "puppet", "puppet.pelab.test"}
    on_ca = lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").check().stdout
    assert cert.fingerprint_sha256 in on_ca.replace("(SHA256) ", "")


def test_install_bash_writes_pe_arguments_to_puppet_conf_and_csr_attributes(lab: LabClient) -> None:
    host = lab.host("compile03")
    clean_on_ca(lab, host.fqdn)
    install_agent(
        lab,
        host,
        ["compile03"],
        ["main:environmentpath=/etc/puppet/code/environments", "extension_requests:pp_auth_role=pe_compiler"],
    )
    conf = host.read("/etc/puppet/puppet.conf") or ""
    assert f"server = {PRIMARY}" in conf
    assert "dns_alt_names = compile03" in conf
    assert "environmentpath = /etc/puppet/code/environments" in conf
    assert 'pp_auth_role: "pe_compiler"' in (host.read("/etc/puppet/csr_attributes.yaml") or "")
    listed = lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").check().stdout
    assert "Requested Certificates" in listed and host.fqdn in listed
    sign(lab, host.fqdn)
    host.run("puppet ssl download_cert").check()
    cert = host.cert()
    assert cert is not None and cert.extensions.get("1.3.6.1.4.1.34380.1.3.13") == "pe_compiler"
    # The PE Compiler group (PE 2019.7+) matches on that trusted extension, which the
    # lab's ENC reads from the signed certificate (as PE's classifier gets trusted facts).
    classifier = lab.classifier()
    compiler_group = classifier.group("PE Compiler")["id"]
    trusted = {"trusted": {"certname": host.fqdn, "extensions": {"pp_auth_role": "pe_compiler"}}}
    assert compiler_group in classifier.request("POST", f"classified/nodes/{host.fqdn}", json=trusted).json()["groups"]
    assert compiler_group not in classifier.classified(host.fqdn)["groups"]
    enc = lab.host("primary").run(f"runuser -u puppet -- {lab.root}/inhost/bin/pelab-enc {host.fqdn}").check()
    assert "puppet_enterprise::profile::master" in enc.stdout  # PE Compiler is a child of PE Master


def test_legacy_puppet_cert_refuses_alt_names_without_the_flag(lab: LabClient) -> None:
    host = lab.host("compile08")
    primary = lab.host("primary")
    clean_on_ca(lab, host.fqdn)
    lab.set_pe_version("2018.1")  # Puppet 5: `puppet cert` on the CA host
    try:
        install_agent(lab, host, ["compile08", "puppet"])
        listed = primary.run("puppet cert list").check().stdout
        assert re.search(r'"compile08.pelab.test" \(SHA256\) [0-9A-F:]+ \(alt names: "DNS:compile08"', listed), listed
        refused = primary.run(f"puppet cert sign {host.fqdn}")
        assert refused.exit_status == 24
        assert "contains subject alternative names" in refused.stderr
        assert primary.run(f"puppet cert --allow-dns-alt-names sign {host.fqdn}").check().stdout.count("Signed") == 1
        assert '+ "compile08.pelab.test"' in primary.run("puppet cert list --all").check().stdout
        cleaned = primary.run(f"puppet cert clean {host.fqdn}").check()
        assert "Revoked certificate" in cleaned.stdout
    finally:
        lab.set_pe_version("2019.8")
    assert primary.run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").exit_status != 0
    # From Puppet 6 (PE 2019.0) `puppet cert` is gone: what PE says, not the Puppet 5 face.
    gone = primary.run(f"puppet cert list {host.fqdn}")
    assert gone.exit_status == 1 and "no longer functional" in gone.stderr


def test_ca_refuses_alt_names_when_allow_subject_alt_names_is_off(lab: LabClient) -> None:
    host = lab.host("compile09")
    clean_on_ca(lab, host.fqdn)
    install_agent(lab, host, ["compile09", "puppet"])
    lab.lab.set_alt_names(False)
    try:
        refused = lab.host("primary").run(f"{puppetserver(lab)} ca sign --certname {host.fqdn}")
        assert refused.exit_status != 0
        assert "subject alternative names" in (refused.stdout + refused.stderr)
        listed = lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").stdout
        assert "Requested Certificates" in listed  # still only a request: nothing was signed
    finally:
        lab.lab.set_alt_names(True)
    sign(lab, host.fqdn)  # allowed again once the CA restarted with the setting on


def test_pinning_through_the_console_api_changes_the_nodes_catalog(lab: LabClient) -> None:
    host = lab.host("compile04")
    enroll(lab, host, ["compile04"])
    classifier = lab.classifier()
    before = lab.catalog("compile04")
    assert before.status_code == 200, before.text
    assert MASTER_CLASS not in before.json()["classes"]
    assert classifier.pin("PE Master", [host.fqdn]).status_code == 204
    try:
        after = lab.catalog("compile04")
        assert after.status_code == 200, after.text
        assert MASTER_CLASS in after.json()["classes"]
        rule = classifier.group("PE Master")["rule"]
        assert ["=", "name", host.fqdn] in rule[1:]
    finally:
        assert classifier.unpin("PE Master", [host.fqdn]).status_code == 204
    assert MASTER_CLASS not in lab.catalog("compile04").json()["classes"]


def whitelist(lab: LabClient, role: str) -> list[str]:
    """The generation's certificate allowlist of PuppetDB or the console."""
    path = {"puppetdb": lab.profile.puppetdb_allowlist, "console": lab.profile.console_allowlist}[role]
    return (lab.role_host(role).read(path) or "").split()


def test_puppetdb_and_console_trust_a_master_only_after_its_run_in_pe_order(lab: LabClient) -> None:
    host = lab.host("compile05")
    enroll(lab, host, ["compile05"])
    classifier = lab.classifier()
    assert classifier.pin("PE Master", [host.fqdn]).status_code == 204
    puppetdb, console = lab.role_host("puppetdb"), lab.role_host("console")
    try:
        # PuppetDB runs too early: the new master has not completed a run as a master.
        puppetdb.agent_run().check((0, 2))
        assert host.fqdn not in whitelist(lab, "puppetdb")
        # The master's full run starts its compile service...
        host.agent_run().check((0, 2))
        assert wait_for(lambda: host.run(f"{lab.root}/inhost/bin/pelab-compile-service ready").exit_status == 0, 30)
        # ...which answers health checks but cannot compile: PuppetDB refuses its certificate.
        own = lab.catalog("compile05", server=host.fqdn)
        assert own.status_code == 500 and "PuppetDB refused" in own.text
        # PuppetDB's run now learns it; the console's run after it (the same run where
        # both are the primary, as in a monolithic install).
        puppetdb.agent_run().check((0, 2))
        assert host.fqdn in whitelist(lab, "puppetdb")
        if console.fqdn != puppetdb.fqdn:
            assert host.fqdn not in whitelist(lab, "console")
            console.agent_run().check((0, 2))
        assert host.fqdn in whitelist(lab, "console")
        served = lab.catalog("compile05", server=host.fqdn)
        assert served.status_code == 200, served.text
        assert served.json()["compiled_by"] == host.fqdn
        assert MASTER_CLASS in served.json()["classes"]
    finally:
        classifier.unpin("PE Master", [host.fqdn])
        host.run(f"{lab.root}/inhost/bin/pelab-compile-service stop")
        deactivate(lab, host.fqdn)
        puppetdb.agent_run().check((0, 2))
        console.agent_run().check((0, 2))
    assert host.fqdn not in whitelist(lab, "puppetdb")


def deactivate(lab: LabClient, certname: str) -> None:
    primary = lab.host("primary")
    resp = requests.post(
        f"https://{lab.role_host('puppetdb').fqdn}:8081/pdb/cmd/v1",
        json={"command": "deactivate node", "version": 3, "payload": {"certname": certname}},
        cert=primary.cert_files(),
        verify=lab.ca_file,
        timeout=30,
    )
    resp.raise_for_status()


def haproxy(lab: LabClient, command: str) -> str:
    return lab.host("lb").run(f"echo {command!r} | socat stdio /run/haproxy/admin.sock").check().stdout


def server_status(lab: LabClient, server: str) -> str | None:
    for line in haproxy(lab, "show stat").splitlines():
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == "puppet_compilers" and fields[1] == server:
            return fields[17]
    return None


def test_haproxy_routes_8140_to_a_healthy_backend_and_marks_a_dead_one_down(lab: LabClient) -> None:
    healthy = lab.host("compile06")
    enroll(lab, healthy, ["compile06", "puppet", "puppet.pelab.test"])
    healthy.run(f"{lab.root}/inhost/bin/pelab-compile-service start").check()
    keywords = "check check-ssl verify required ca-file /etc/haproxy/pe-ca.pem inter 1s fall 2 rise 1"
    try:
        for name, address in (("compile06", healthy.address), ("deadhost", lab.host("compile16").address)):
            haproxy(lab, f"add server puppet_compilers/{name} {address}:8140 {keywords}")
            haproxy(lab, f"enable health puppet_compilers/{name}")
            haproxy(lab, f"enable server puppet_compilers/{name}")
        assert wait_for(lambda: server_status(lab, "compile06") == "UP", 20), haproxy(lab, "show stat")
        assert wait_for(lambda: server_status(lab, "deadhost") == "DOWN", 20), haproxy(lab, "show stat")
        # Through the LB's 8140 (TLS passes through): the healthy master answers, verified
        # against the PE CA under the pool's name `puppet.pelab.test`.
        for _ in range(4):
            out = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--cacert",
                    lab.ca_file,
                    "--connect-to",
                    "puppet.pelab.test:8140:lb.pelab.test:8140",
                    "https://puppet.pelab.test:8140/status/v1/simple",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert out.stdout.strip() == "running", out.stderr
    finally:
        for name in ("compile06", "deadhost"):
            lab.host("lb").run(
                f"echo 'set server puppet_compilers/{name} state maint' | socat stdio /run/haproxy/admin.sock;"
                f" echo 'del server puppet_compilers/{name}' | socat stdio /run/haproxy/admin.sock"
            )
        healthy.run(f"{lab.root}/inhost/bin/pelab-compile-service stop")
    assert server_status(lab, "compile06") is None


def test_rsync_over_ssh_between_two_hosts(lab: LabClient) -> None:
    master, primary = lab.host("compile07"), lab.host("primary")
    master.run("rm -f /root/.ssh/sync_key*; ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/sync_key").check()
    pub = (master.read("/root/.ssh/sync_key.pub") or "").strip()
    marker = f"pelab-rsync-test-{time.time_ns()}"
    production = "/etc/puppet/code/environments/production"
    primary.run(f"echo {pub!r} >> /root/.ssh/authorized_keys && echo {marker} > {production}/{marker}").check()
    try:
        master.run(
            "mkdir -p /etc/puppet/code/environments && rsync -a --delete"
            " -e 'ssh -i /root/.ssh/sync_key -o BatchMode=yes -o StrictHostKeyChecking=yes'"
            " root@primary.pelab.test:/etc/puppet/code/environments/ "
            "/etc/puppet/code/environments/"
        ).check()
        assert (master.read(f"/etc/puppet/code/environments/production/{marker}") or "").strip() == marker
        digest = "find /etc/puppet/code/environments -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"
        assert master.run(digest).check().stdout == primary.run(digest).check().stdout
    finally:
        primary.run(
            f"rm -f /etc/puppet/code/environments/production/{marker}; "
            f"grep -vF {pub.split()[1]!r} /root/.ssh/authorized_keys > /root/.ssh/ak.tmp; "
            "mv /root/.ssh/ak.tmp /root/.ssh/authorized_keys"
        ).check()


def test_r10k_deploys_the_control_repo_on_a_host(lab: LabClient) -> None:
    host = lab.host("compile10")
    config = (
        f"---\ncachedir: /var/cache/r10k\nsources:\n  control:\n    remote: {lab.root}/git/control-repo.git\n"
        "    basedir: /tmp/r10k-envs\n"
    )
    host.put("/tmp/r10k-test.yaml", config.encode())
    result = host.run("rm -rf /tmp/r10k-envs && r10k deploy environment --config /tmp/r10k-test.yaml --verbose info")
    result.check()
    assert "class puppet_enterprise::profile::master" in (
        host.run("cat /tmp/r10k-envs/production/modules/puppet_enterprise/manifests/profile/master.pp").check().stdout
    )


def test_nfs_mount_is_simulated_by_the_lab_helper(lab: LabClient) -> None:
    host = lab.host("compile11")
    host.run("umount /mnt 2>/dev/null; true")
    host.run("mount -t nfs -o ro primary.pelab.test:/etc/puppet/code /mnt").check()
    try:
        listing = host.run("findmnt -n -o TARGET,OPTIONS /mnt; ls /mnt/environments").check().stdout
        assert "/mnt" in listing and "ro" in listing and "production" in listing
        assert host.run("touch /mnt/x").exit_status != 0  # read-only, like a ro export
    finally:
        host.run("umount /mnt").check()


def test_console_tokens_pins_and_whitelisted_certs_follow_the_pe_version(lab: LabClient) -> None:
    classifier = lab.classifier()
    group = classifier.group("PE Master")
    # A certificate that is not whitelisted gets nothing.
    outsider = lab.host("compile02")
    if outsider.cert():
        resp = requests.get(
            f"{lab.console_url()}/classifier-api/v1/groups", cert=outsider.cert_files(), verify=lab.ca_file, timeout=30
        )
        assert resp.status_code == 401
    assert classifier.request("GET", "groups/not-a-uuid").status_code == 400
    assert classifier.request("GET", "groups/6a9b0b84-9c1f-4a51-8b0f-2d1f6e2c0d11").status_code == 404
    lab.set_pe_version("3.7")
    try:
        by_cert = lab.classifier(token=False)
        resp = requests.post(
            f"{lab.console_url()}/rbac-api/v1/auth/token",
            json={**lab.admin_credentials(), "lifetime": "1h"},
            verify=lab.ca_file,
            timeout=30,
        )
        assert resp.status_code == 404  # no RBAC tokens in PE 3.7
        assert by_cert.request("POST", f"groups/{group['id']}/pin", json={"nodes": ["x.pelab.test"]}).status_code == 404
        # PE 3.7 pinning: rewrite the group's `or` rule.
        rule = group["rule"] + [["=", "name", "legacy.pelab.test"]]
        assert by_cert.request("POST", f"groups/{group['id']}", json={"rule": rule}).status_code == 200
        assert group["id"] in by_cert.classified("legacy.pelab.test")["groups"]
        assert by_cert.request("POST", f"groups/{group['id']}", json={"rule": group["rule"]}).status_code == 200
    finally:
        lab.set_pe_version("2019.8")
    stale = classifier.request("POST", f"groups/{group['id']}", json={"serial_number": -1, "description": "x"})
    assert stale.status_code == 409


def test_latency_knobs_slow_the_runs_they_name(lab: LabClient) -> None:
    host = lab.role_host("puppetdb")
    lab.lab.set_knobs({"puppetdb_run": 3})
    try:
        t0 = time.monotonic()
        host.agent_run().check((0, 2))
        slow = time.monotonic() - t0
    finally:
        lab.lab.set_knobs({"puppetdb_run": 0})
    assert slow >= 3


def test_lab_state_checks_are_pinned_to_the_lab_ca(lab: LabClient) -> None:
    """Sanity of the trust anchors the product will use: the CA file is the primary's."""
    pem = Path(lab.ca_file).read_bytes()
    served = requests.get(f"https://{PRIMARY}:8140/puppet-ca/v1/certificate/ca", verify=lab.ca_file, timeout=30)
    assert served.status_code == 200
    assert hashlib.sha256(served.content.strip()).digest() == hashlib.sha256(pem.strip()).digest()
