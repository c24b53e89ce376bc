"""Shared helpers for the programs the lab runs *inside* its hosts.

These files are copied to <lab root>/inhost and run with the machine's /usr/bin/python3
(stdlib only, plus Debian's python3-yaml), often as the `puppet` user from Puppet Server,
so they must not import anything from the project's virtualenv.

Every `puppet`, `curl` and `openssl` a product or an admin runs on a lab host goes through
a wrapper that imports this module, where PE's are the binaries themselves: it imports
only what those wrappers use (~10 ms), and ssl, http.client and http.server (~35 ms more)
where a function needs them; the HTTP servers' base classes are in pelab_http.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

INHOST = Path(__file__).resolve().parent
ROOT = INHOST.parent
SSLDIR = Path("/var/lib/puppet/ssl")


def default_signals() -> None:
    """preexec_fn for the services the lab starts: SIGHUP back to its default, so a JVM
    started from a process that ignores HUP (the lab under `nohup`) still installs its HUP
    handler and reloads on `service ... reload` (lab/hosts.py default_signals)."""
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def settings() -> dict[str, Any]:
    return json.loads((ROOT / "lab.json").read_text())


def profile() -> Any:
    """The PE generation the lab imitates (lab/generations.py, copied in as
    pelab_generations.py by `lab up`), from lab.json's pe_version at call time."""
    import pelab_generations

    return pelab_generations.profile_for(str(settings()["pe_version"]))


# Subcommands of the real Puppet 7 that talk to the CA (certificates, CRL, CSRs).
CA_SUBCOMMANDS = ("agent", "ssl")


def lab_ca_args(args: list[str]) -> list[str]:
    """`--ca_port <lab CA port>` for a real Puppet 7 agent or `puppet ssl` on a generation
    whose 8140 has no `/puppet-ca/v1` (PE 3.x: the lab's own Puppet 7 agents keep a route
    of their own, lab/generations.py lab_ca_port); nothing elsewhere."""
    words = [a for a in args if not a.startswith("-")]
    if not words or words[0] not in CA_SUBCOMMANDS or any(a.startswith("--ca_port") for a in args):
        return []
    port = profile().lab_ca_port
    return [] if port == 8140 else ["--ca_port", str(port)]


def certname() -> str:
    """This host's certname: Puppet's default, the FQDN (the lab sets hostname = FQDN)."""
    import socket

    return socket.gethostname()


def address_of(fqdn: str) -> str:
    return str(settings()["hosts"][fqdn]["address"])


def cert_paths(name: str | None = None) -> tuple[Path, Path, Path]:
    name = name or certname()
    return SSLDIR / "certs" / f"{name}.pem", SSLDIR / "private_keys" / f"{name}.pem", SSLDIR / "certs" / "ca.pem"


# The CRL a lab Puppet Server (the primary's on PE <= 2017.1, compile01's real one, the
# stand-ins) verifies clients against: a copy of the host's own CRL file (hostcrl) taken
# when the server starts or reloads, or when the master profile's run brings the CA's
# (PE 2017.2+), never in between - as PE's servers, which re-read it only then
# (lab/generations.py crl_read_at_restart_only).
SERVED_CRL = Path("/etc/puppet/puppetserver/pelab-served-crl.pem")
HOSTCRL = SSLDIR / "crl.pem"
CACRL = Path("/etc/puppet/puppetserver/ca/ca_crl.pem")


def ca_crl() -> bytes:
    """The CA's current CRL: its own file on the primary, else its HTTP API (lab route)."""
    if certname() == settings()["primary"]:
        return CACRL.read_bytes()
    path = "/puppet-ca/v1/certificate_revocation_list/ca"
    status, body = https("GET", settings()["primary"], profile().lab_ca_port, path, headers={"Accept": "text/plain"})
    if status != 200 or b"BEGIN X509 CRL" not in body:
        raise RuntimeError(f"the CA answered {status} for its CRL: {body[:200]!r}")
    return body


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace path's content (world-readable); False when it was already that."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return True


def take_served_crl() -> bool:
    """What a Puppet Server reads when it (re)starts or reloads: its own CRL file, hostcrl
    (PE's ssl-crl-path), never the CA's directly - a compile master's copy is as current as
    whatever last wrote it (the agent's bootstrap, PE 2017.2+'s master profile, an admin).
    A host without one yet takes the CA's, as the agent's bootstrap would have fetched it."""
    return write_if_changed(SERVED_CRL, HOSTCRL.read_bytes() if HOSTCRL.exists() else ca_crl())


def server_context(
    name: str | None = None, require_client_cert: bool = False, crl: Path | None = None
) -> ssl.SSLContext:
    import ssl

    cert, key, ca = cert_paths(name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if crl is not None:  # a revoked client certificate fails the handshake, as on Puppet Server
        ctx.load_verify_locations(str(crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def client_context(with_cert: bool = True) -> ssl.SSLContext:
    import ssl

    cert, key, ca = cert_paths()
    ctx = ssl.create_default_context(cafile=str(ca))
    if with_cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def https(
    method: str,
    host: str,
    port: int,
    path: str,
    body: Any = None,
    timeout: float = 20.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTPS request with this host's Puppet certificate, verified against the Puppet CA."""
    import http.client

    conn = http.client.HTTPSConnection(host, port, context=client_context(), timeout=timeout)
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


PP_AUTH_ROLE_OID = "1.3.6.1.4.1.34380.1.3.13"


class CatalogRefusedError(Exception):
    """This master may not compile: PuppetDB or the console does not trust it (yet)."""


def trusted_extensions(node: str, primary: str) -> dict[str, str]:
    """The node's certificate extensions we classify on (pp_auth_role), from the CA."""
    import subprocess

    status, pem = https("GET", primary, profile().lab_ca_port, f"/puppet-ca/v1/certificate/{node}")
    if status != 200:
        return {}
    text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True).stdout.decode()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(PP_AUTH_ROLE_OID) and i + 1 < len(lines):
            return {"pp_auth_role": lines[i + 1].strip().lstrip(".").strip()}
    return {}


def classify_for_catalog(node: str) -> dict[str, Any]:
    """What a PE master does for each catalog request, in PE's order:
    1. submit the node's facts to PuppetDB with this master's own certificate - so a master
       that PuppetDB does not trust yet fails real work, as in PE;
    2. ask the console's classifier with this master's certificate - so the console must
       trust it too (its rbac-certificate-whitelist).
    Returns {classes, environment, parameters}; raises CatalogRefusedError otherwise."""
    s = settings()
    me = certname()
    generation = profile()
    if generation.puppetdb_legacy_api:  # PuppetDB 2.x: replace facts v3 names the node `name`
        command = {"command": "replace facts", "version": 3, "payload": {"name": node, "values": {}}}
    else:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        payload = {"certname": node, "environment": "production", "producer_timestamp": stamp, "producer": me}
        command = {"command": "replace facts", "version": 5, "payload": {**payload, "values": {}}}
    try:
        status, body = https("POST", s["puppetdb"], 8081, generation.puppetdb_command_path(), command)
    except OSError as exc:
        raise CatalogRefusedError(f"{me}: PuppetDB refused this master's connection: {exc}") from exc
    if status != 200:
        raise CatalogRefusedError(f"{me}: PuppetDB refused this master: HTTP {status} {body[:200]!r}")
    trusted = {"certname": node, "extensions": trusted_extensions(node, s["primary"])}
    try:
        status, body = https(
            "POST", s["console"], 4433, f"/classifier-api/v1/classified/nodes/{node}", {"fact": {}, "trusted": trusted}
        )
    except OSError as exc:
        raise CatalogRefusedError(f"{me}: the console refused this master's connection: {exc}") from exc
    if status != 200:
        raise CatalogRefusedError(f"{me}: the classifier refused this master: HTTP {status} {body[:200]!r}")
    result = json.loads(body)
    return {"classes": result["classes"], "environment": result["environment"], "parameters": result["parameters"]}


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
