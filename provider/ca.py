"""The Puppet CA, through its CLI on the CA host: command builders and output parsers.

Two dialects (provider.dialects): `puppet cert` (Puppet <= 5, PE 3.7-2018.1) and
`puppetserver ca` (Puppet 6+, PE 2019.0+). Before Puppet Server 6 the HTTP API could not
sign CSRs with SANs at all, so signing goes through the CLI on the CA host for every
dialect, and so does reading the state (one code path, parsed here, golden-tested).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from provider.dialects import CaCli

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


def list_command(cli: CaCli) -> list[str]:
    return ["puppetserver", "ca", "list", "--all"] if cli == "puppetserver-ca" else ["puppet", "cert", "list", "--all"]


def parse_list(cli: CaCli, text: str) -> dict[str, CaEntry]:
    return parse_puppetserver_ca_list(text) if cli == "puppetserver-ca" else parse_puppet_cert_list(text)


def sign_command(cli: CaCli, certname: str) -> list[str]:
    if cli == "puppetserver-ca":
        return ["puppetserver", "ca", "sign", "--certname", certname]
    return ["puppet", "cert", "--allow-dns-alt-names", "sign", certname]


def clean_command(cli: CaCli, certname: str) -> list[str]:
    """Revoke (if signed) and remove the certificate: a plain DELETE would not revoke."""
    if cli == "puppetserver-ca":
        return ["puppetserver", "ca", "clean", "--certname", certname]
    return ["puppet", "cert", "clean", certname]


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
