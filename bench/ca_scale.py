"""Adding one master on a CA with ten certificates and on one with 20,000 (issue 28): the
product reads the CA by certname only, so the two should cost the same.

The lab's CA is the real Puppet Server CA. Its 20,000 extra certificates are what a CA of
a large fleet holds on disk: `signed/<certname>.pem` files, signed by the CA's key, each
with its own serial, listed in `inventory.txt` (Puppet Server's CA layout). They are made
here directly with the CA key (one RSA key for all: the CA's reads do not depend on whose
key it is) instead of 20,000 CSRs through the API, and removed again afterwards
(inventory.txt restored; the serial counter stays advanced, as a real CA's does).

    .venv/bin/python -m bench.ca_scale [--certificates 20000] [--rounds 2]

Needs the lab up (`make lab`) on a profile with Puppet Server's CA API (2019.8, the
default); uses compile02 and leaves it bare. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from lab.client import LabClient
from lab.config import host_by_short
from tests.cli_stack import CliStack
from tests.labtests.helpers import bare_masters, lab_stack_values

STACK = "cascale"
HOST = "compile02"
FILLER_DOMAIN = "fleet.pelab.test"


def cadir(client: LabClient) -> Path:
    return Path(client.root) / "hosts" / "primary" / "etc-puppet" / "puppetserver" / "ca"


@contextmanager
def fleet_on_ca(client: LabClient, count: int) -> Iterator[float]:
    """`count` extra signed certificates on the lab's CA for the duration; yields the
    seconds it took to make them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    ca = cadir(client)
    ca_key = serialization.load_pem_private_key((ca / "ca_key.pem").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca / "ca_crt.pem").read_bytes())
    stat = (ca / "ca_crt.pem").stat()
    inventory = (ca / "inventory.txt").read_text()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    serial = int((ca / "serial").read_text().strip(), 16)
    now = datetime.datetime.now(datetime.UTC)
    made: list[Path] = []
    lines: list[str] = []
    started = time.monotonic()
    try:
        for i in range(count):
            name = f"agent{i:05d}.{FILLER_DOMAIN}"
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
            )
            path = ca / "signed" / f"{name}.pem"
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            os.chown(path, stat.st_uid, stat.st_gid)
            made.append(path)
            stamp = "%Y-%m-%dT%H:%M:%SUTC"
            lines.append(
                f"0x{serial:04X} {cert.not_valid_before_utc:{stamp}} {cert.not_valid_after_utc:{stamp}} /CN={name}\n"
            )
            serial += 1
        (ca / "inventory.txt").write_text(inventory + "".join(lines))
        (ca / "serial").write_text(f"{serial:04X}\n")
        yield time.monotonic() - started
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        current = (ca / "inventory.txt").read_text()
        kept = [line for line in current.splitlines(keepends=True) if not line.rstrip().endswith(f".{FILLER_DOMAIN}")]
        (ca / "inventory.txt").write_text("".join(kept))


def ca_read_seconds(client: LabClient, path: str) -> float:
    """One GET of the CA API with the primary's certificate, as the provider's curl makes it."""
    url = f"https://{host_by_short('primary').fqdn}:8140/puppet-ca/v1/{path}"
    started = time.monotonic()
    resp = requests.get(url, cert=client.host("primary").cert_files(), verify=client.ca_file, timeout=600)
    seconds = time.monotonic() - started
    if resp.status_code not in (200, 404):
        raise RuntimeError(f"{url}: HTTP {resp.status_code}")
    return seconds


def add_one(client: LabClient, workdir: Path) -> float:
    """Wall seconds of `pulumi up` adding one master (then destroyed, the host bared)."""
    bare_masters(client, [HOST])
    stack = CliStack(STACK, workdir, lab_stack_values(client, ()))
    stack.set_config(lab_stack_values(client, (HOST,)))
    started = time.monotonic()
    stack.up()
    seconds = time.monotonic() - started
    stack.destroy()
    bare_masters(client, [HOST])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    client = LabClient()
    if not client.profile.ca_v1_api:
        raise SystemExit(f"{client.profile.label}: run this on a profile with the CA API on 8140 (2019.8)")
    small_count = len(list((cadir(client) / "signed").glob("*.pem")))
    small: list[float] = []
    large: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        reads_small = (
            ca_read_seconds(client, "certificate_statuses/any"),
            ca_read_seconds(client, "certificate_status/x"),
        )
        for i in range(args.rounds):
            small.append(add_one(client, Path(tmp) / f"small{i}"))
            with fleet_on_ca(client, args.certificates) as made:
                if i == 0:
                    print(f"made {args.certificates} certificates on the CA in {made:.1f} s")
                    reads_large = (
                        ca_read_seconds(client, "certificate_statuses/any"),
                        ca_read_seconds(client, "certificate_status/x"),
                    )
                large.append(add_one(client, Path(tmp) / f"large{i}"))
    big = small_count + args.certificates
    print(f"{'CA holds':<22} {'add one master (s)':>20} {'list all (s)':>13} {'read one (s)':>13}")
    print(f"{small_count:>6} certificates{'':<2} {min(small):>20.1f} {reads_small[0]:>13.2f} {reads_small[1]:>13.3f}")
    print(f"{big:>6} certificates{'':<2} {min(large):>20.1f} {reads_large[0]:>13.2f} {reads_large[1]:>13.3f}")
    print(
        f"ratio (large/small, best of {args.rounds}): {min(large) / min(small):.3f}   runs: small {small} large {large}"
    )


if __name__ == "__main__":
    main()
