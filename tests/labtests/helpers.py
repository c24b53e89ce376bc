"""Steps the lab tests share: enrolling a bare host by hand, the way PE documents it."""

from __future__ import annotations

import json
import shlex
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import requests
import yaml

from lab.client import LabClient, LabHost
from lab.inhost.pelab_common import wait_for
from provider.lb import haproxy
from provider.master.certs import IssuedCert
from provider.pe import classifier

PRIMARY = "primary.pelab.test"


class HasOutputs(Protocol):
    """A run whose resources' outputs a check reads: the harness's GraphRun or a CliStack."""

    def outputs(self, name: str) -> dict[str, Any]: ...


DEFAULT_GENERATION = "2019.8"  # lab.config.LabSettings' default profile
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def install_agent(
    lab: LabClient, host: LabHost, alt_names: list[str] | None = None, extra: list[str] | None = None
) -> None:
    """PE's step 2 on a bare host: fetch install.bash from the primary (verified against
    the CA copied over SSH, never curl -k) and run it with PE's arguments."""
    host.wipe_agent()
    host.put("/tmp/pe-ca.pem", Path(lab.ca_file).read_bytes())
    args = [f"main:certname={host.fqdn}"]
    if alt_names:
        args.append(f"main:dns_alt_names={','.join(alt_names)}")
    args += extra or []
    args += ["--puppet-service-ensure", "stopped"]
    host.run("mkdir -p /var/lib/puppet/ssl/certs && cp /tmp/pe-ca.pem /var/lib/puppet/ssl/certs/ca.pem").check()
    host.run(
        f"curl -sSf --cacert /tmp/pe-ca.pem https://{PRIMARY}:8140/packages/current/install.bash"
        f" | bash -s -- {shlex.join(args)}"
    ).check()
    submit_csr(lab, host)


@contextmanager
def on_generation(lab: LabClient, version: str, host: LabHost | None = None) -> Iterator[None]:
    """The lab switched to a PE generation's profile for the block, then back to the
    default; `host` (if given) is bare before and after, its certificate gone from the CA."""
    if host is not None:
        clean_on_ca(lab, host.fqdn)
        host.wipe_agent()
    lab.set_pe_version(version)
    try:
        yield
    finally:
        lab.set_pe_version(DEFAULT_GENERATION)
        if host is not None:
            clean_on_ca(lab, host.fqdn)
            host.wipe_agent()


def submit_csr(lab: LabClient, host: LabHost) -> None:
    """With the service stopped the installer makes no run, so no CSR: submit one with the
    generation's agent CLI (Puppet 6+ `puppet ssl`, before `puppet certificate generate`)."""
    puppet = f"{lab.profile.bin_dir}/puppet"
    if lab.profile.puppet_major >= 6:
        host.run(f"{puppet} ssl submit_request --certname {host.fqdn}").check()
    else:
        host.run(f"{puppet} certificate generate {host.fqdn} --ca-location remote").check()


def puppetserver(lab: LabClient) -> str:
    """Puppet Server's CLI on the primary at PE's path: never on a non-login PATH."""
    return f"{lab.profile.bin_dir}/puppetserver"


def clean_on_ca(lab: LabClient, certname: str) -> None:
    """Nothing of certname left on the CA: `puppet cert clean` up to PE 2018.1; after it the
    requests `puppetserver ca clean` sends, without its 30 s wait (LabClient.ca_clean)."""
    if lab.profile.has_puppet_cert:
        lab.host("primary").run(f"puppet cert clean {shlex.quote(certname)}")
    else:
        lab.ca_clean(certname)


def revoke_on_ca(lab: LabClient, certname: str) -> None:
    """Revoke (not clean) a certificate with the generation's CA CLI, as an admin would."""
    if lab.profile.has_puppet_cert:
        lab.host("primary").run(f"puppet cert revoke {shlex.quote(certname)}").check()
    else:
        lab.host("primary").run(f"{puppetserver(lab)} ca revoke --certname {shlex.quote(certname)}").check()


def unpin(lab: LabClient, certname: str, group_name: str, endpoint: bool) -> None:
    """Take a node out of a group's pins by hand: PE's unpin endpoint (2016.1+), or before it
    the group's rule rewritten without the node."""
    console = lab.classifier()
    if endpoint:
        console.unpin(group_name, [certname]).raise_for_status()
        return
    group = console.group(group_name)
    body: dict[str, Any] = {"rule": classifier.unpin_rule(group.get("rule"), certname)}
    if "serial_number" in group:
        body["serial_number"] = group["serial_number"]
    console.request("POST", f"groups/{group['id']}", json=body).raise_for_status()


def stop_compile_service(lab: LabClient, short: str) -> None:
    """Take a master's compile service down and keep it down, as an admin does for
    maintenance: the agent daemon first (its run applies the master profile, which starts
    pe-puppetserver again; the daemon's first run follows every provisioning), then any run
    still in flight, then the service; verified not answering."""
    host = lab.host(short)
    host.run(f"service {lab.profile.agent_service} stop").check()
    # This host's processes only (its mount namespace: the lab's hosts share one PID
    # namespace, and another master's agent run must not count); [p]: not this shell.
    in_flight = "pgrep --ns $$ --nslist mnt -f '[p]uppet agent|[p]elab-compile-service (start|restart)'"
    assert wait_for(lambda: host.run(in_flight).exit_status != 0, 180, 1.0), "an agent run did not end"
    host.run(f"{lab.root}/inhost/bin/pelab-compile-service stop").check()
    assert host.run(f"{lab.root}/inhost/bin/pelab-compile-service ready").exit_status != 0


def served_fingerprint(lab: LabClient, short: str) -> str:
    """The SHA-256 fingerprint of the certificate the host's 8140 serves (as the output
    cert_fingerprint writes it)."""
    pem = ssl.get_server_certificate((lab.host(short).address, 8140), timeout=30)
    return IssuedCert.from_pem(pem.encode()).fingerprint


def sign(lab: LabClient, certname: str) -> None:
    if lab.profile.has_puppet_cert:
        lab.host("primary").run(f"puppet cert --allow-dns-alt-names sign {shlex.quote(certname)}").check()
    else:
        lab.host("primary").run(f"{puppetserver(lab)} ca sign --certname {shlex.quote(certname)}").check()


def enroll(lab: LabClient, host: LabHost, alt_names: list[str] | None = None) -> None:
    """Install, sign on the CA, fetch the signed certificate: a host ready for its first run."""
    clean_on_ca(lab, host.fqdn)
    install_agent(lab, host, alt_names)
    sign(lab, host.fqdn)
    host.run("puppet ssl download_cert").check()


def bare_masters(lab: LabClient, shorts: list[str] | tuple[str, ...]) -> None:
    """Compile hosts as a new deployment finds them: no certificate on the CA, no agent,
    no sync job, nothing of theirs in the 8140 pool, pinned to no node group."""
    socket_cmd = "socat stdio /run/haproxy/admin.sock"
    certnames = {lab.host(short).fqdn for short in shorts}
    console = lab.classifier()
    for group in console.groups():  # a rule rewrite: every generation's console takes it
        if any(classifier.is_pinned(group.get("rule"), c) for c in certnames):
            rule = group.get("rule")
            for certname in certnames:
                rule = classifier.unpin_rule(rule, certname) if classifier.is_pinned(rule, certname) else rule
            body: dict[str, Any] = {"rule": rule}
            if "serial_number" in group:
                body["serial_number"] = group["serial_number"]
            console.request("POST", f"groups/{group['id']}", json=body).raise_for_status()
    for short in shorts:
        certname = lab.host(short).fqdn
        clean_on_ca(lab, certname)
        lab.host(short).wipe_agent()
        lab.host(short).run("rm -f /etc/cron.d/pe-file-sync; rm -rf /etc/puppetlabs/pe-file-sync")
        lab.host("lb").run(
            f"echo 'set server puppet_compilers/{certname} state maint' | {socket_cmd}; "
            f"echo 'del server puppet_compilers/{certname}' | {socket_cmd}; "
            f"sed -i '/^ *server {certname} /d' /etc/haproxy/haproxy.cfg"
        )


def lab_stack_config(lab: LabClient, shorts: list[str] | tuple[str, ...], **changes: Any) -> dict[str, str]:
    """Pulumi.lab.yaml's config as the engine hands it to the program (values as strings),
    with these compile hosts as the masters and the lab's own root (PELAB_ROOT may differ)."""
    config = lab_stack_values(lab, shorts, **changes)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def lab_stack_values(lab: LabClient, shorts: list[str] | tuple[str, ...], **changes: Any) -> dict[str, Any]:
    """Pulumi.lab.yaml's config as a stack file holds it (objects as objects), with these
    compile hosts as the masters and the lab's own root."""
    config: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "Pulumi.lab.yaml").read_text())["config"]
    for key in ("pe:sshPrivateKeyFile", "pe:knownHostsFile", "pe:rbacTokenFile"):
        config[key] = config[key].replace("/var/lib/pelab", str(lab.root))
    listed = {m["certname"].split(".")[0]: m for m in config["pe:compileMasters"]}
    config["pe:compileMasters"] = [
        listed.get(s) or {"certname": lab.host(s).fqdn, "address": lab.host(s).address, "dnsAltNames": [s]}
        for s in shorts
    ]
    config["pe:timeouts"] = {"health": 120, "run": 600, "service": 300}
    # The hosts of the lab's running layout (Pulumi.lab.yaml names the default one's).
    config["pe:console"] = {**config["pe:console"], "host": lab.role_host("console").fqdn}
    config["pe:puppetdb"] = {**config["pe:puppetdb"], "host": lab.role_host("puppetdb").fqdn}
    if lab.role_host("database").fqdn != lab.role_host("puppetdb").fqdn:  # extra-large
        config["pe:database"] = {"host": lab.role_host("database").fqdn}
    config.update(changes)
    return config


# InfraRefresh's runs in each lab layout, in PE's order: a host's roles in one run, in the
# place of its first (the product's rule, provider/infra_refresh.py merged_by_host).
REFRESH_RUNS = {
    "monolithic": ["primary run (PuppetDB, console, primary)"],
    "split": ["PuppetDB run", "console run", "primary run"],
    "extra-large": ["database run", "primary run (PuppetDB, console, primary)"],
}


def refresh_runs(lab: LabClient) -> list[str]:
    """The infrastructure runs the product makes in the running lab's layout (PE 2015.3+)."""
    return REFRESH_RUNS[lab.lab.settings().active_layout]


def lb_stats(lab: LabClient) -> dict[tuple[str, str], haproxy.ServerStat]:
    """HAProxy's running pool, read from its runtime API on the lab's LB."""
    out = lab.host("lb").run("echo 'show stat' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock").check().stdout
    return haproxy.parse_show_stat(out)


def lb_config(lab: LabClient) -> str:
    """HAProxy's saved configuration on the lab's LB."""
    return lab.host("lb").read("/etc/haproxy/haproxy.cfg") or ""


def pdb_get(lab: LabClient, path: str) -> requests.Response:
    """A PuppetDB query on 8081 as the primary makes it (its certificate is in the allowlist)."""
    return requests.get(
        f"https://{lab.role_host('puppetdb').fqdn}:8081{path}",
        cert=lab.host("primary").cert_files(),
        verify=lab.ca_file,
        timeout=30,
    )


def pdb_node(lab: LabClient, certname: str) -> dict[str, Any] | None:
    resp = pdb_get(lab, lab.profile.puppetdb_query_path(f"nodes/{certname}"))
    return dict(resp.json()) if resp.status_code == 200 else None
