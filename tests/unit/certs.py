"""A test certificate made on the spot (cryptography): a key file and a self-signed PEM."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes


def key_and_cert(tmp: Path, name: str, extensions: dict[str, bytes] | None = None) -> tuple[Path, bytes]:
    """A private key file and a self-signed certificate (PEM) for it, naming `name` as
    subject and SAN, usable as its own CA; `extensions` adds raw ones (OID -> DER value),
    as Puppet's CA copies extension requests."""
    import datetime

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)  # its own CA
    )
    for oid, value in (extensions or {}).items():
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_path = tmp / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key_path, cert.public_bytes(serialization.Encoding.PEM)
