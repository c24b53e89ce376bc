"""Certificates as PE's steps read them (pure): fingerprints, the CA-signed certificate's
names and authorization extensions, and the certificate a master serves on 8140 as
openssl's handshake prints it."""

from __future__ import annotations

from dataclasses import dataclass

from provider.core.command import CommandResult
from provider.master.config import PEADM_AVAILABILITY_GROUP_OID


def fingerprint_of_pem(pem: bytes) -> str:
    from cryptography import x509  # here, not at the top: a preview (check, diff) parses no certificate
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(pem)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# Puppet's authorization extensions (ppAuthCertExt, 1.3.6.1.4.1.34380.1.3): what the CA
# copies from csr_attributes.yaml's extension_requests into the certificate, and what the
# classifier's `trusted.extensions` rules match (PE Compiler: pp_auth_role, [S45]).
AUTH_EXTENSION_ARC = "1.3.6.1.4.1.34380.1.3."


AUTH_EXTENSION_NAMES = {"1.3.6.1.4.1.34380.1.3.1": "pp_authorization", "1.3.6.1.4.1.34380.1.3.13": "pp_auth_role"}


def der_string(value: bytes) -> str:
    """The text of a DER string (UTF8String, PrintableString, IA5String: what Puppet writes
    for an extension request); the raw bytes decoded when it is not one."""
    if len(value) >= 2 and value[0] in (0x0C, 0x13, 0x16) and value[1] < 0x80 and len(value) == value[1] + 2:
        return value[2:].decode(errors="replace")
    return value.decode(errors="replace")


@dataclass(frozen=True)
class IssuedCert:
    fingerprint: str
    serial: int
    sans: frozenset[str]
    extensions: tuple[tuple[str, str], ...] = ()  # Puppet's authorization extensions, by name

    @classmethod
    def from_pem(cls, pem: bytes) -> IssuedCert:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(pem)
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = frozenset(str(n) for n in names.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            sans = frozenset()
        extensions = []
        for ext in cert.extensions:
            oid = ext.oid.dotted_string
            ours = oid.startswith(AUTH_EXTENSION_ARC) or oid == PEADM_AVAILABILITY_GROUP_OID
            if ours and isinstance(ext.value, x509.UnrecognizedExtension):
                extensions.append((AUTH_EXTENSION_NAMES.get(oid, oid), der_string(ext.value.value)))
        return cls(fingerprint_of_pem(pem), cert.serial_number, sans, tuple(sorted(extensions)))


def missing_extensions(have: tuple[tuple[str, str], ...], wanted: tuple[tuple[str, str], ...]) -> list[str]:
    """The requested extensions (`name=value`) a CSR or certificate does not carry."""
    present = set(have)
    return [f"{k}={v}" for k, v in wanted if (k, v) not in present]


def served_certificate_command(certname: str, cafile: str) -> list[str]:
    """openssl's TLS handshake with the master's own 8140, as an agent or the load balancer
    makes it, verified against the PE CA; prints the served certificate and the verify
    result, which served_identity() reads with the certificate's name. Only options OpenSSL
    0.9.8e has (RHEL 5, a PE 3.7 master platform; lab/platforms.py): no -servername (0.9.8f;
    Puppet Server serves one certificate on 8140 anyway), -verify_return_error (1.0.0) or
    its hostname-check option (1.0.2)."""
    return ["openssl", "s_client", "-connect", f"{certname}:8140", "-CAfile", cafile]


def first_pem_certificate(text: str) -> bytes | None:
    """The first PEM certificate in s_client's output (the server's own, without -showcerts)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return None
    return (text[start : stop + len(end)] + "\n").encode()


def certificate_names_host(pem: bytes, certname: str) -> bool:
    """What s_client's hostname check (OpenSSL 1.0.2+) checked (RFC 6125): the certificate's DNS SANs name
    `certname`, or, when it has none, its subject CN is `certname`."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if dns:
        return certname.lower() in (d.lower() for d in dns)
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(str(a.value).lower() == certname.lower() for a in common_names)


# s_client's verdict on the chain against -CAfile, in every OpenSSL since 0.9.
VERIFIED_LINE = "Verify return code: 0 (ok)"


def served_identity(result: CommandResult, certname: str) -> bytes | None:
    """The certificate a handshake (served_certificate_command) got, if the chain verified
    against the PE CA and the certificate names `certname`; None when the handshake failed,
    did not verify, or the certificate is someone else's."""
    pem = first_pem_certificate(result.stdout)
    if result.exit_status != 0 or pem is None or VERIFIED_LINE not in result.stdout:
        return None
    return pem if certificate_names_host(pem, certname) else None
