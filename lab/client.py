"""Test-side view of the lab: hosts you can SSH into and ask about, like testinfra.

    lab = LabClient()
    host = lab.host("compile01")
    host.run("puppet agent -t").exit_status
    host.cert().sans            # SANs of the host's signed certificate
    lab.classifier().pin("PE Master", ["compile01.pelab.test"])

SSH goes through paramiko with the host key pinned from the lab's known_hosts (never
AutoAddPolicy), HTTPS through requests verified against the lab's Puppet CA.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from lab.config import HostSpec, host_by_short, lab_root
from lab.deploy import Lab
from lab.generations import Profile
from lab.hosts import HostPaths


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str

    def check(self, ok: tuple[int, ...] = (0,)) -> CommandResult:
        if self.exit_status not in ok:
            raise AssertionError(
                f"[{self.host}] `{self.command}` exited {self.exit_status}\n"
                f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
            )
        return self


@dataclass(frozen=True)
class CertInfo:
    subject_cn: str
    sans: frozenset[str]
    fingerprint_sha256: str  # Puppet's format: AA:BB:...
    serial: int
    extensions: dict[str, str]

    @classmethod
    def from_pem(cls, pem: bytes) -> CertInfo:
        cert = x509.load_pem_x509_certificate(pem)
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = frozenset(str(n) for n in san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = frozenset()
        exts = {}
        for ext in cert.extensions:
            if ext.oid.dotted_string.startswith("1.3.6.1.4.1.34380."):
                raw = getattr(ext.value, "value", b"")
                exts[ext.oid.dotted_string] = raw[2:].decode(errors="replace") if raw else ""
        digest = cert.fingerprint(hashes.SHA256()).hex().upper()
        return cls(
            str(cn), names, ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)), cert.serial_number, exts
        )


class LabHost:
    def __init__(self, lab: LabClient, spec: HostSpec):
        self.lab = lab
        self.spec = spec
        self.paths = HostPaths(lab.root, spec)

    @property
    def fqdn(self) -> str:
        return self.spec.fqdn

    @property
    def address(self) -> str:
        return self.spec.address

    def ssh(self, timeout: float = 15) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.lab.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        # Nagle off, as the product's sessions (provider.ssh.session.tcp_connection).
        sock = socket.create_connection((self.fqdn, 22), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(
            self.fqdn,
            port=22,
            username="root",
            key_filename=str(self.lab.key),
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            look_for_keys=False,
            allow_agent=False,
        )
        return client

    def run(self, command: str | list[str], timeout: float = 600, stdin: str | None = None) -> CommandResult:
        """Run a command over SSH (the same path the product uses). Never raises on exit code."""
        line = command if isinstance(command, str) else shlex.join(command)
        with self.ssh() as client:
            chan_in, chan_out, chan_err = client.exec_command(line, timeout=timeout)
            if stdin is not None:
                chan_in.write(stdin)
            chan_in.channel.shutdown_write()
            out = chan_out.read().decode(errors="replace")
            err = chan_err.read().decode(errors="replace")
            status = chan_out.channel.recv_exit_status()
        return CommandResult(self.spec.short, line, status, out, err)

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        with self.ssh() as client, client.open_sftp() as sftp:
            with sftp.file(path, "wb") as f:
                f.write(data)
            sftp.chmod(path, mode)

    def read(self, path: str) -> str | None:
        """A file inside the host (through its per-host directory), or None if absent."""
        try:
            return self.paths.inner(path).read_text()
        except FileNotFoundError:
            return None

    def cert(self, certname: str | None = None) -> CertInfo | None:
        name = certname or self.fqdn
        text = self.read(f"/var/lib/puppet/ssl/certs/{name}.pem")
        return CertInfo.from_pem(text.encode()) if text else None

    def cert_files(self, certname: str | None = None) -> tuple[str, str]:
        name = certname or self.fqdn
        return (
            str(self.paths.inner(f"/var/lib/puppet/ssl/certs/{name}.pem")),
            str(self.paths.inner(f"/var/lib/puppet/ssl/private_keys/{name}.pem")),
        )

    def agent_run(self, timeout: float = 600) -> CommandResult:
        return self.run("puppet agent --test --detailed-exitcodes", timeout=timeout)

    def wipe_agent(self) -> None:
        """Back to a bare host: no PE packages (no `puppet` at all), no puppet.conf settings,
        no SSL state, no compile service, no PuppetDB."""
        self.run(
            f"{self.lab.root}/inhost/bin/pelab-compile-service stop; "
            f"{self.lab.root}/inhost/bin/pelab-pe-puppetdb stop; rm -rf /etc/puppetlabs/puppetdb; "
            "for s in puppet pe-puppet; do service $s stop >/dev/null 2>&1; done; "
            f"{self.lab.root}/inhost/bin/pelab-pe-install remove; "
            "rm -rf /var/lib/puppet/ssl /etc/puppet/csr_attributes.yaml /var/cache/puppet/state/*; "
            "echo '# bare lab host' > /etc/puppet/puppet.conf"
        )


class Classifier:
    """PE classifier API v1 on the lab console, authenticated with an RBAC token or a
    whitelisted client certificate."""

    def __init__(self, base: str, ca: str, token: str | None = None, cert: tuple[str, str] | None = None):
        self.base = base
        self.ca = ca
        self.session = requests.Session()
        if token:
            self.session.headers["X-Authentication"] = token
        if cert:
            self.session.cert = cert

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        # verify per request: requests lets REQUESTS_CA_BUNDLE override Session.verify.
        return self.session.request(method, f"{self.base}/classifier-api/v1/{path}", timeout=30, verify=self.ca, **kw)

    def groups(self) -> list[dict[str, Any]]:
        resp = self.request("GET", "groups")
        resp.raise_for_status()
        return list(resp.json())

    def group(self, name: str) -> dict[str, Any]:
        for g in self.groups():
            if g["name"] == name:
                return g
        raise KeyError(f"no node group named {name!r}")

    def pin(self, group: str, nodes: list[str]) -> requests.Response:
        return self.request("POST", f"groups/{self.group(group)['id']}/pin", json={"nodes": nodes})

    def unpin(self, group: str, nodes: list[str]) -> requests.Response:
        return self.request("POST", f"groups/{self.group(group)['id']}/unpin", json={"nodes": nodes})

    def classified(self, node: str) -> dict[str, Any]:
        resp = self.request("POST", f"classified/nodes/{node}", json={})
        resp.raise_for_status()
        return dict(resp.json())


class LabClient:
    def __init__(self, root: Path | None = None):
        self.root = root or lab_root()
        self.lab = Lab(self.root)

    @property
    def key(self) -> Path:
        return self.lab.key

    @property
    def known_hosts(self) -> Path:
        return self.lab.known_hosts

    @property
    def ca_file(self) -> str:
        return str(self.lab.ca_file())

    def host(self, short: str) -> LabHost:
        return LabHost(self, host_by_short(short))

    def admin_credentials(self) -> dict[str, str]:
        return dict(json.loads((self.root / "state" / "console-admin.json").read_text()))

    def console_url(self) -> str:
        return f"https://{self.lab.role_host('console').fqdn}:4433"

    def token(self) -> str:
        resp = requests.post(
            f"{self.console_url()}/rbac-api/v1/auth/token",
            json={**self.admin_credentials(), "lifetime": "1h"},
            verify=self.ca_file,
            timeout=30,
        )
        resp.raise_for_status()
        return str(resp.json()["token"])

    def classifier(self, token: bool | None = None) -> Classifier:
        """The console's classifier as an admin: an RBAC token where the generation has them
        (2015.3+), else the primary's certificate from the console's allowlist."""
        if token is None:
            token = self.profile.tokens
        if token:
            return Classifier(self.console_url(), self.ca_file, token=self.token())
        return Classifier(self.console_url(), self.ca_file, cert=self.host("primary").cert_files())

    def catalog(self, node: str, server: str | None = None) -> requests.Response:
        """Request the node's catalog with the node's own certificate (as its agent would)."""
        host = self.host(node)
        target = server or host_by_short("primary").fqdn
        return requests.get(
            f"https://{target}:8140/puppet/v3/catalog/{host.fqdn}",
            params={"environment": "production"},
            cert=host.cert_files(),
            verify=self.ca_file,
            timeout=120,
        )

    def ca_statuses(self) -> list[dict[str, Any]]:
        """Every request and certificate on the real CA (its HTTP API, the primary's
        certificate), whatever CLI the generation has."""
        resp = self.ca_request("GET", "certificate_statuses/any_key")
        resp.raise_for_status()
        return list(resp.json())

    def ca_state(self, certname: str) -> str | None:
        """The real CA's view of a certname (requested, signed, revoked), or None: read over
        its HTTP API with the primary's certificate, whatever CLI the generation has."""
        entry = self.ca_entry(certname)
        return None if entry is None else str(entry["state"])

    def ca_entry(self, certname: str) -> dict[str, Any] | None:
        """The CA's certificate_status of a certname (state, serial_number, fingerprint,
        dns_alt_names), or None when the CA has nothing for it."""
        resp = self.ca_request("GET", f"certificate_status/{certname}")
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return dict(resp.json())

    def ca_clean(self, certname: str) -> None:
        """Nothing of certname left on the real CA: what `puppetserver ca clean` sends (revoke
        if signed, then delete), each request on its own connection. The CLI sends its DELETE
        on its revoke's connection, which Puppet Server 7 leaves waiting 30 s while it reloads
        its TLS context with the new CRL (provider/master/certificate.py)."""
        entry = self.ca_entry(certname)
        if entry is None:
            return
        status = f"certificate_status/{certname}"
        if entry["state"] == "signed":
            self.ca_request("PUT", status, json={"desired_state": "revoked"}).raise_for_status()
        self.ca_request("DELETE", status).raise_for_status()

    def ca_request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to the real CA's HTTP API (`/puppet-ca/v1/<path>` on the lab's CA
        port) with the primary's certificate, on a connection of its own."""
        return requests.request(
            method,
            f"https://{host_by_short('primary').fqdn}:{self.profile.lab_ca_port}/puppet-ca/v1/{path}",
            cert=self.host("primary").cert_files(),
            verify=self.ca_file,
            timeout=60,
            **kwargs,
        )

    def settings(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "lab.json").read_text()))

    def set_pe_version(self, version: str) -> None:
        """Switch the running lab to another generation's profile (lab/generations.py)."""
        self.lab.set_pe_version(version)

    def set_layout(self, layout: str) -> None:
        """Move PuppetDB, PE-PostgreSQL and the console to another architecture's hosts
        (lab/config.py LAYOUTS; "" is the generation's common one)."""
        self.lab.set_layout(layout)

    def role_host(self, role: str) -> LabHost:
        """The host holding an infrastructure role (puppetdb, console, database) now."""
        return LabHost(self, self.lab.role_host(role))

    @property
    def profile(self) -> Profile:
        return self.lab.settings().profile


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def port_open(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0
