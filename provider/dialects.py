"""PE generations ("dialects"): what differs between PE versions when adding a master.

Chosen by one input (`pe_version`), never guessed (shared/facts/pe-procedure.md):
  * CA commands: `puppet cert --allow-dns-alt-names sign` up to PE 2018.1 (Puppet <= 5),
    `puppetserver ca sign --certname` from PE 2019.0 (Puppet 6 removed `puppet cert`);
  * node group: "PE Master", or "PE Compiler" from PE 2019.7, reached through the
    trusted extension pp_auth_role=pe_compiler requested at install;
  * pinning: rewrite the group's `or` rule up to 2015.x (no pin endpoint), the pin
    endpoint from 2016.1;
  * classifier auth: a whitelisted client certificate only before 2015.3, an RBAC token
    (or a whitelisted certificate) from 2015.3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CaCli = Literal["puppet-cert", "puppetserver-ca"]
Classification = Literal["rule", "pin", "trusted"]


@dataclass(frozen=True)
class Dialect:
    pe_version: tuple[int, int]
    ca_cli: CaCli
    node_group: str
    classification: Classification
    tokens_supported: bool
    extension_requests: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return f"PE {self.pe_version[0]}.{self.pe_version[1]}"


def parse_pe_version(value: object) -> tuple[int, int]:
    """'2019.8.5' -> (2019, 8). Raises ValueError with the expected form."""
    if not isinstance(value, str):
        raise ValueError(f"pe_version must be a string like '2019.8' or '3.7', not {value!r}")
    parts = value.split(".")
    if len(parts) < 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"pe_version must look like '2019.8' or '3.7', not {value!r}")
    major, minor = int(parts[0]), int(parts[1])
    if not (major == 3 and minor >= 7) and major < 2015:
        raise ValueError(f"pe_version {value!r} is older than PE 3.7, which this provider does not support")
    return major, minor


def dialect_for(pe_version: str, node_group: str | None = None) -> Dialect:
    version = parse_pe_version(pe_version)
    compiler_era = version >= (2019, 7)
    return Dialect(
        pe_version=version,
        ca_cli="puppetserver-ca" if version >= (2019, 0) else "puppet-cert",
        node_group=node_group or ("PE Compiler" if compiler_era else "PE Master"),
        classification="trusted" if compiler_era else ("pin" if version >= (2016, 1) else "rule"),
        tokens_supported=version >= (2015, 3),
        extension_requests=(("pp_auth_role", "pe_compiler"),) if compiler_era else (),
    )
