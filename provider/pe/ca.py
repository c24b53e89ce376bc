"""The Puppet CA as the providers reach it from the CA host: command builders and output
parsers (golden-tested against the lab's real CA).

Two CA CLIs (provider.pe.generation, pe-generations.md §3); every command runs the CLI by
its absolute path on the CA host (`puppetserver` is never on PATH, §1):
- `puppet cert` (Puppet <= 5, PE 3.7-2018.1): its HTTP API could not sign CSRs with SANs
  at all, so reading and signing go through the CLI on the CA host;
- Puppet Server 6+ (PE 2019.0+): the CA's HTTP API (`/puppet-ca/v1/certificate_status`),
  called with curl on the CA host with the primary's own certificate - what the
  `puppetserver ca` CLI itself does, minus a Ruby start-up per call (~1 CPU-s on the
  primary, which every master's steps share). Cleaning (revoke + delete) still goes
  through `puppetserver ca clean`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Literal

from provider.pe.curl import curl_argv
from provider.pe.generation import CaCli

CertState = Literal["requested", "signed", "revoked"]


@dataclass(frozen=True)
class CaEntry:
    certname: str
    state: CertState
    fingerprint: str  # SHA256, AA:BB:...
    sans: frozenset[str]  # DNS names, without the "DNS:" prefix
    extensions: tuple[tuple[str, str], ...] = ()


# puppetserver ca list:  "    name   (SHA256)  FP\talt names: [\"DNS:a\", ...]\tauthorization extensions: [k: v]"
_PS_LINE = re.compile(r"^\s+(?P<name>\S+)\s+\(SHA256\)\s+(?P<fp>[0-9A-F:]+)(?P<rest>.*)$")
# puppet cert list: '+ "name" (SHA256) FP (alt names: "DNS:a", "DNS:b")'
_PC_LINE = re.compile(r'^(?P<mark>[+-]?)\s*"(?P<name>[^"]+)"\s+\(SHA256\)\s+(?P<fp>[0-9A-F:]+)(?P<rest>.*)$')
_DNS = re.compile(r'"DNS:([^"]+)"')


def parse_puppetserver_ca_list(text: str) -> dict[str, CaEntry]:
    """Parse `puppetserver ca list [--all] [--certname X]` output."""
    entries: dict[str, CaEntry] = {}
    section: CertState | None = None
    for line in text.splitlines():
        header = line.strip().lower()
        if header.startswith("requested certificates"):
            section = "requested"
            continue
        if header.startswith("signed certificates"):
            section = "signed"
            continue
        if header.startswith("revoked certificates"):
            section = "revoked"
            continue
        match = _PS_LINE.match(line)
        if not match or section is None:
            continue
        rest = match.group("rest")
        ext = re.search(r"authorization extensions: \[([^\]]*)\]", rest)
        extensions = (
            tuple(
                (k.strip(), v.strip()) for k, _, v in (p.partition(":") for p in ext.group(1).split(",")) if k.strip()
            )
            if ext
            else ()
        )
        entries[match.group("name")] = CaEntry(
            match.group("name"), section, match.group("fp"), frozenset(_DNS.findall(rest)), extensions
        )
    return entries


def parse_puppet_cert_list(text: str) -> dict[str, CaEntry]:
    """Parse Puppet <= 5 `puppet cert list --all` output ('+' signed, '-' revoked)."""
    entries: dict[str, CaEntry] = {}
    for line in text.splitlines():
        match = _PC_LINE.match(line)
        if not match:
            continue
        mark = match.group("mark")
        state: CertState = "signed" if mark == "+" else "revoked" if mark == "-" else "requested"
        entries[match.group("name")] = CaEntry(
            match.group("name"), state, match.group("fp"), frozenset(_DNS.findall(match.group("rest")))
        )
    return entries


def list_command(cli: CaCli, binary: str, certname: str) -> list[str]:
    """One certname's request, certificate or revoked certificate - never the whole CA
    (`--all` reads every certificate: minutes on a CA with tens of thousands of agents).
    Puppet <= 5's `puppet cert list <name>` lists the named hosts (cert.rb's interface,
    `hosts = subjects`); `puppetserver ca list --certname`. `binary`: Generation.ca_bin."""
    if cli == "puppetserver-ca":
        return [binary, "ca", "list", "--certname", certname]
    return [binary, "cert", "list", certname]


def listed_nowhere(text: str, certname: str) -> bool:
    """`puppet cert list <name>` for a name the CA has nothing for: Puppet's CA verify()
    raises "Could not find a certificate for <name>" (Puppet 3-5 certificate_authority.rb)."""
    return f"could not find a certificate for {certname}".lower() in text.lower()


def parse_list(cli: CaCli, text: str) -> dict[str, CaEntry]:
    return parse_puppetserver_ca_list(text) if cli == "puppetserver-ca" else parse_puppet_cert_list(text)


@dataclass(frozen=True)
class ApiClient:
    """How curl on the CA host authenticates to the CA's HTTP API: the primary's own
    certificate (Puppet Server's auth.conf lets a certificate with pp_cli_auth manage
    certificate statuses), verified against the PE CA - never `-k`."""

    ca_certname: str
    hostcert: str
    hostprivkey: str
    localcacert: str
    port: int = 8140

    def url(self, path: str) -> str:
        return f"https://{self.ca_certname}:{self.port}/puppet-ca/v1/{path}"

    def curl(self, *args: str) -> list[str]:
        """curl printing the HTTP status after the body (provider.pe.curl.with_http_status
        reads it; not curl's fail-with-body option, which PE's platforms' curl lacks)."""
        return curl_argv("--cacert", self.localcacert, "--cert", self.hostcert, "--key", self.hostprivkey, *args)


def api_status_command(client: ApiClient, certname: str) -> list[str]:
    """One certname's status (`GET certificate_status/<name>`: 200 with its JSON, 404 when
    the CA has nothing for it) - never `certificate_statuses/any_key`, which returns every
    certificate the CA holds."""
    return client.curl(client.url(f"certificate_status/{certname}"))


def api_sign_command(client: ApiClient, certname: str) -> tuple[list[str], bytes]:
    """(argv, stdin): sign a pending CSR - what `puppetserver ca sign` sends."""
    argv = client.curl(
        "-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", "@-",
        client.url(f"certificate_status/{certname}"),
    )  # fmt: skip
    return argv, json.dumps({"desired_state": "signed"}).encode()


def api_clean_commands(client: ApiClient, certname: str, signed: bool) -> list[tuple[list[str], bytes | None]]:
    """(argv, stdin) pairs: what `puppetserver ca clean` sends (puppetlabs/puppetserver-ca-cli,
    action/clean.rb: revoke a signed certificate, then delete it) - without its Ruby
    start-up on the primary. A request that was never signed is only deleted."""
    out: list[tuple[list[str], bytes | None]] = []
    status = client.url(f"certificate_status/{certname}")
    if signed:
        revoke = client.curl("-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", "@-", status)
        out.append((revoke, json.dumps({"desired_state": "revoked"}).encode()))
    out.append((client.curl("-X", "DELETE", status), None))
    return out


def download_cert_script(url: str, certname: str, localcacert: str, hostcert: str, hostprivkey: str) -> str:
    """Shell for the agent host: what `puppet ssl download_cert` does, without a Ruby
    start-up - fetch the signed certificate from the CA's public endpoint `url`
    (Generation.certificate_path; TLS verified against the PE CA), keep it only if it
    holds the host's own public key, install it.
    No pipelines: under `set -e` each failing command stops the script."""
    q = shlex.quote
    mismatch = q(f"the CA's certificate for {certname} does not match this host's private key")
    # The HTTP status by -w, not curl's fail-with-body option (7.76+, newer than PE's platforms):
    # an error's body (the CA's reason) goes to stderr.
    return (
        f"set -e; tmp=$(mktemp {q(hostcert + '.XXXXXX')}); trap 'rm -f \"$tmp\"' EXIT; "
        f'code=$(curl -sS --max-time 60 --cacert {q(localcacert)} -o "$tmp" -w %{{http_code}} {q(url)}); '
        f'if [ "$code" != 200 ]; then cat "$tmp" >&2; echo "HTTP $code from the CA" >&2; exit 22; fi; '
        f'cert_key=$(openssl x509 -in "$tmp" -noout -pubkey); '
        # pkey: OpenSSL 1.0.0+; rsa (Puppet's keys up to Puppet 7) on older platforms' 0.9.8.
        f"host_key=$(openssl pkey -in {q(hostprivkey)} -pubout 2>/dev/null || openssl rsa -in {q(hostprivkey)} "
        "-pubout 2>/dev/null); "
        f'if [ -z "$cert_key" ] || [ "$cert_key" != "$host_key" ]; then echo {mismatch} >&2; exit 3; fi; '
        f'chmod 644 "$tmp"; mv "$tmp" {q(hostcert)}; trap - EXIT'
    )


def parse_status_json(text: str) -> CaEntry | None:
    """Parse one certificate status (`GET certificate_status/<name>`, Puppet Server's CA
    API); None for a state the CA reports that is none of requested/signed/revoked."""
    return status_entry(json.loads(text))


def status_entry(item: dict[str, Any]) -> CaEntry | None:
    state = item.get("state")
    if state not in ("requested", "signed", "revoked"):
        return None
    names = item.get("subject_alt_names") or item.get("dns_alt_names") or []
    fingerprint = (item.get("fingerprints") or {}).get("SHA256") or item.get("fingerprint", "")
    extensions = tuple(sorted((str(k), str(v)) for k, v in (item.get("authorization_extensions") or {}).items()))
    return CaEntry(
        item["name"],
        state,
        fingerprint,
        frozenset(n[4:] for n in names if isinstance(n, str) and n.startswith("DNS:")),
        extensions,
    )


def parse_statuses_json(text: str) -> dict[str, CaEntry]:
    """Parse `GET certificate_statuses/<any>` (a JSON list of certificate statuses): the
    lab's and the tests' view of a whole CA; the providers read one certname at a time."""
    entries = (status_entry(item) for item in json.loads(text))
    return {e.certname: e for e in entries if e is not None}


def sign_command(cli: CaCli, binary: str, certname: str) -> list[str]:
    """`binary`: the CA CLI's absolute path (Generation.ca_bin)."""
    if cli == "puppetserver-ca":
        return [binary, "ca", "sign", "--certname", certname]
    return [binary, "cert", "--allow-dns-alt-names", "sign", certname]


def clean_command(cli: CaCli, binary: str, certname: str) -> list[str]:
    """Revoke (if signed) and remove the certificate: a plain DELETE would not revoke.
    `binary`: the CA CLI's absolute path (Generation.ca_bin)."""
    if cli == "puppetserver-ca":
        return [binary, "ca", "clean", "--certname", certname]
    return [binary, "cert", "clean", certname]


def expected_sans(certname: str, alt_names: list[str]) -> frozenset[str]:
    """What Puppet puts in a cert requested with dns_alt_names: the names plus the
    certname itself (a SAN equal to the subject is always added and always allowed)."""
    return frozenset([*alt_names, certname]) if alt_names else frozenset()


def sans_match(entry: CaEntry, certname: str, alt_names: list[str]) -> bool:
    wanted = expected_sans(certname, alt_names)
    if not wanted:  # a cert without alt names lists only its certname (or nothing) as SAN
        return entry.sans <= {certname}
    return entry.sans == wanted


def refusal_reason(output: str) -> str | None:
    """Why the CA refused to sign, if its output says so."""
    low = output.lower()
    if "subject alternative names" in low or ("alt names" in low and "disallowed" in low):
        return (
            "the CA refuses certificates with subject alternative names: set allow-subject-alt-names: true "
            "in the CA's ca.conf and restart the CA service"
        )
    if "authorization extensions" in low:
        return "the CA refuses authorization extensions: set allow-authorization-extensions: true in ca.conf"
    return None
