"""Steps the lab tests share: enrolling a bare host by hand, the way PE documents it."""

from __future__ import annotations

import shlex
from pathlib import Path

from lab.client import LabClient, LabHost

PRIMARY = "primary.pelab.test"


def install_agent(
    lab: LabClient, host: LabHost, alt_names: list[str] | None = None, extra: list[str] | None = None
) -> None:
    """PE's step 2 on a bare host: fetch install.bash from the primary (verified against
    the CA copied over SSH, never curl -k) and run it with PE's arguments."""
    host.wipe_agent()
    host.put("/tmp/pe-ca.pem", Path(lab.ca_file).read_bytes())
    args = [f"agent:certname={host.fqdn}"]
    if alt_names:
        args.append(f"main:dns_alt_names={','.join(alt_names)}")
    args += extra or []
    args += ["--puppet-service-ensure", "stopped"]
    host.run("mkdir -p /var/lib/puppet/ssl/certs && cp /tmp/pe-ca.pem /var/lib/puppet/ssl/certs/ca.pem").check()
    host.run(
        f"curl -sSf --cacert /tmp/pe-ca.pem https://{PRIMARY}:8140/packages/current/install.bash"
        f" | bash -s -- {shlex.join(args)}"
    ).check()


def clean_on_ca(lab: LabClient, certname: str) -> None:
    lab.host("primary").run(f"puppetserver ca clean --certname {shlex.quote(certname)}")


def sign(lab: LabClient, certname: str) -> None:
    lab.host("primary").run(f"puppetserver ca sign --certname {shlex.quote(certname)}").check()


def enroll(lab: LabClient, host: LabHost, alt_names: list[str] | None = None) -> None:
    """Install, sign on the CA, fetch the signed certificate: a host ready for its first run."""
    clean_on_ca(lab, host.fqdn)
    install_agent(lab, host, alt_names)
    sign(lab, host.fqdn)
    host.run("puppet ssl download_cert").check()
