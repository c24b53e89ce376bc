"""PE generations: everything that differs between PE versions when adding or removing a
compile master, derived from one input (`pe_version`), never guessed on a host.

Every step asks the `Generation` instead of testing version numbers itself. Facts and
their sources: shared/facts/pe-generations.md (section numbers below as "§n"):
  * §1: Puppet's major version; binaries in /opt/puppet/bin (PE 3.x) or /opt/puppetlabs/bin
    (AIO, 2015.2+) - a non-login SSH shell's PATH has neither, and `puppetserver` is never
    linked into /usr/local/bin, so every command uses an absolute path;
  * §3: the CA CLI: `puppet cert` on the CA up to 2018.1, `puppetserver ca` from 2019.0;
  * §4: the agent's CSR tool (`puppet certificate generate` up to Puppet 5, `puppet ssl`
    from 6) and `puppet config delete` (Puppet 5.4, PE 2018.1);
  * §5: install.bash's `--puppet-service-ensure/-enable` (2016.4) and
    `extension_requests:` (used from 2019.7 for pp_auth_role);
  * §2: `/status/v1/simple` on 8140 from Puppet Server 2.6.0 (PE 2016.4);
  * §6: PuppetDB's command endpoint (2.x `/v3/commands` in PE 3.x, `/pdb/cmd/v1` after),
    the allow-list files (`...whitelist` up to 2019.x, `...allowlist` from 2021.1), and
    compilers' own PuppetDB from 2019.7, admitted by PE-PostgreSQL through pg_ident.conf;
  * §7: the node group ("PE Compiler" by pp_auth_role from 2019.7), pinning (pin endpoint
    from 2016.1, rule rewrite before), RBAC tokens (2015.3) and their default lifetime;
  * §8: PE 3.x's masters group sets enable_ca_proxy on the master profile; after a
    revocation the remaining masters restart, reload or run Puppet to take the new CRL;
  * §10: the agent service (`pe-puppet` in 3.x, `puppet` after).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

CaCli = Literal["puppet-cert", "puppetserver-ca"]
Classification = Literal["rule", "pin", "trusted"]
CrlRefresh = Literal["restart", "reload", "run"]

# Where the `puppet` binary lives, newest generation first (§1): what a probe tries on a
# host whose PE version is not an input (InfraRefresh's PuppetDB and console hosts).
PUPPET_BINARIES = ("/opt/puppetlabs/bin/puppet", "/opt/puppet/bin/puppet")

# The ident maps PE's database profile declares for PuppetDB's three roles, as peadm's
# plans/add_compiler.pp adds them for a new compiler (§6 [S29]).
PUPPETDB_PG_IDENT_MAPS = (
    ("pe-puppetdb-pe-puppetdb-map", "pe-puppetdb"),
    ("pe-puppetdb-pe-puppetdb-migrator-map", "pe-puppetdb-migrator"),
    ("pe-puppetdb-pe-puppetdb-read-map", "pe-puppetdb-read"),
)


@dataclass(frozen=True)
class Generation:
    pe_version: tuple[int, int]
    ca_cli: CaCli
    node_group: str
    classification: Classification
    tokens_supported: bool
    extension_requests: tuple[tuple[str, str], ...]
    puppet_major: int
    bin_dir: str
    agent_service: str
    puppetdb_allowlist: str
    console_allowlist: str
    install_service_flags: bool
    status_endpoint: bool
    token_lifetime_default: str  # "" where there are no RBAC tokens
    crl_section: str
    # Parameters the masters' group must give the master profile: PE 3.x's procedure sets
    # `enable_ca_proxy = true` on puppet_enterprise::profile::master in PE Master (§8 [S1]),
    # so compile masters proxy CA requests to the primary.
    master_class_params: tuple[tuple[str, Any], ...] = ()
    # From PE 2019.7 a compiler runs its own PuppetDB against PE-PostgreSQL, which admits it
    # by its Puppet certificate: pg_ident.conf must map its certname to each PuppetDB role
    # (`<map> <certname> <role>`), then PostgreSQL is reloaded - what peadm's
    # plans/add_compiler.pp does before the compiler's first run (pe-generations.md §6 [S29]).
    compiler_puppetdb: bool = False
    pg_ident_maps: tuple[tuple[str, str], ...] = ()  # (map name, database role)
    # PE keeps the cluster under its PostgreSQL major version; upgrades leave old ones behind.
    postgresql_data_glob: str = "/opt/puppetlabs/server/data/postgresql/*/data"
    postgresql_service: str = "pe-postgresql"
    # After a master's certificate is revoked, how the remaining masters come to refuse it
    # (§8 [S38], PE's node removal pages): up to 2017.1 a Puppet run on the primary "will copy
    # the CRL to the correct SSL directory", then Puppet Server re-reads it only when
    # restarted (3.7-2015.2: `service pe-puppetserver restart`) or reloaded (2015.3-2017.1: a
    # HUP, `service pe-puppetserver reload`), on the primary and every compile master; from
    # 2017.2 "the updated CRL is managed by Puppet and distributed to compile masters": a
    # Puppet run on each compile master, nothing on the primary.
    crl_refresh: CrlRefresh = "run"

    @property
    def label(self) -> str:
        return f"PE {self.pe_version[0]}.{self.pe_version[1]}"

    @property
    def puppet_bin(self) -> str:
        return f"{self.bin_dir}/puppet"

    @property
    def puppetserver_bin(self) -> str:
        return f"{self.bin_dir}/puppetserver"

    @property
    def ca_bin(self) -> str:
        """The binary of the CA CLI: `puppet` (for `puppet cert`) or `puppetserver` (for `puppetserver ca`)."""
        return self.puppetserver_bin if self.ca_cli == "puppetserver-ca" else self.puppet_bin

    def certificate_path(self, certname: str) -> str:
        """The CA's public endpoint for a signed certificate on 8140 (§2): PE 3.x's Puppet
        Server has only the environment-prefixed route; /puppet-ca/v1 from 2015.2."""
        if self.pe_version < (2015, 0):
            return f"/production/certificate/{certname}"
        return f"/puppet-ca/v1/certificate/{certname}"

    def csr_command(self, certname: str) -> list[str]:
        """Submit this host's CSR without an agent run (what peadm's submit_csr task does).
        Both tools make the key if there is none and reuse the one there; dns_alt_names and
        csr_attributes.yaml come from the agent's own configuration (install.bash wrote them)."""
        if self.puppet_major >= 6:
            return [self.puppet_bin, "ssl", "submit_request", "--certname", certname]
        return [self.puppet_bin, "certificate", "generate", certname, "--ca-location", "remote"]

    def deactivate_command(self, certname: str, producer_timestamp: str) -> tuple[str, dict[str, Any]]:
        """(URL path, JSON body) of PuppetDB's `deactivate node` command (§6)."""
        if self.pe_version < (2015, 0):  # PuppetDB 2.x: version 2 takes the bare certname
            return "/v3/commands", {"command": "deactivate node", "version": 2, "payload": certname}
        body = {
            "command": "deactivate node",
            "version": 3,
            "payload": {"certname": certname, "producer_timestamp": producer_timestamp},
        }
        return "/pdb/cmd/v1", body


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


def puppet_major_for(version: tuple[int, int]) -> int:
    """Puppet's major version in a PE release (§1: the agent row)."""
    for first_pe, puppet in (((2023, 0), 8), ((2021, 0), 7), ((2019, 0), 6), ((2017, 0), 5), ((2015, 0), 4)):
        if version >= first_pe:
            return puppet
    return 3


def generation_for(pe_version: str, node_group: str | None = None) -> Generation:
    version = parse_pe_version(pe_version)
    pe3 = version < (2015, 0)
    compiler_era = version >= (2019, 7)
    allowlist = version >= (2021, 1)
    puppet_major = puppet_major_for(version)
    return Generation(
        pe_version=version,
        ca_cli="puppetserver-ca" if version >= (2019, 0) else "puppet-cert",
        node_group=node_group or ("PE Compiler" if compiler_era else "PE Master"),
        classification="trusted" if compiler_era else ("pin" if version >= (2016, 1) else "rule"),
        tokens_supported=version >= (2015, 3),
        extension_requests=(("pp_auth_role", "pe_compiler"),) if compiler_era else (),
        puppet_major=puppet_major,
        bin_dir="/opt/puppet/bin" if pe3 else "/opt/puppetlabs/bin",
        agent_service="pe-puppet" if pe3 else "puppet",
        puppetdb_allowlist="/etc/puppetlabs/puppetdb/certificate-" + ("allowlist" if allowlist else "whitelist"),
        console_allowlist="/etc/puppetlabs/console-services/rbac-certificate-"
        + ("allowlist" if allowlist else "whitelist"),
        install_service_flags=version >= (2016, 4),
        # /status/v1/simple: "Introduced in Puppet Server 2.6.0" (Puppet Server docs, Simple
        # endpoint), first shipped in PE 2016.4 (§2 [S10]); PE 2015.2-2016.2 have 2.1-2.4.
        status_endpoint=version >= (2016, 4),
        token_lifetime_default="1h" if version >= (2019, 7) else ("5m" if version >= (2015, 3) else ""),
        crl_section="server" if puppet_major >= 6 else "master",
        master_class_params=(("enable_ca_proxy", True),) if pe3 else (),
        compiler_puppetdb=compiler_era,
        pg_ident_maps=PUPPETDB_PG_IDENT_MAPS if compiler_era else (),
        crl_refresh="run" if version >= (2017, 2) else ("reload" if version >= (2015, 3) else "restart"),
    )
