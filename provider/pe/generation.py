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
  * §10: the agent service (`pe-puppet` in 3.x, `puppet` after);
  * the primary's Puppet run after new masters (2015.3+) and its file sync allowlist
    (docs/resources/infra-refresh.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

CaCli = Literal["puppet-cert", "puppetserver-ca"]
Classification = Literal["rule", "pin", "trusted"]
CrlRefresh = Literal["restart", "reload", "run"]
PeVersion = tuple[int, ...]  # (major, minor) or (major, minor, patch)

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
    pe_version: PeVersion  # (major, minor[, patch])
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
    # After new masters, PE's add procedure runs Puppet on the primary last from 2015.3 (the
    # release that brought file sync): "compile master, PuppetDB node, console node, master
    # of masters" (split) or "compile master, master of masters" (monolithic); 3.7-2015.2 list
    # PuppetDB and the console only; from 2019.0 "the compiler, and then the primary"
    # (docs-archive pe/<v>/install_multimaster.markdown, installing_compile_masters.md;
    # docs/resources/infra-refresh.md has the quotes).
    primary_run: bool = False
    # The primary's file sync storage service serves only the certnames in
    # `file-sync.client-certnames` of this file, which its run rebuilds from the nodes
    # PuppetDB knows as masters (PE's puppet_enterprise::master::file_sync, seen in public
    # copies only (i); PE 2021.0's known issues name the setting and the file). "" before
    # file sync (2015.3).
    file_sync_conf: str = ""

    @property
    def label(self) -> str:
        return "PE " + ".".join(str(p) for p in self.pe_version)

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


# The PE lines this provider supports: each has a lab profile it is tested against
# (lab/generations.py); 3.8 is 3.7's generation (same packaging, Puppet 3, Server 1.x).
# Other lines are refused at check(): nothing here knows what their installers, CA or
# console accept (e.g. 2015.2 has no RBAC tokens, 2017.x no lab profile).
SUPPORTED_LINES: tuple[tuple[int, int], ...] = (
    (3, 7), (3, 8), (2016, 4), (2018, 1), (2019, 8), (2021, 7), (2023, 8),
)  # fmt: skip
# The current PE line's releases are numbered 2025.<n> (one stream, not one LTS minor).
CURRENT_LINE_MAJOR = 2025
# Lines in which a step the provider takes depends on the patch release, so pe_version
# must name it: install.bash's --puppet-service-ensure/-enable arrived in 2016.4.9
# (pe-generations.md §5 [S23]); earlier 2016.4.x installers reject them.
PATCH_GATED_LINES = {(2016, 4): "install.bash's --puppet-service-ensure/-enable arrived in 2016.4.9"}


def supported_table() -> str:
    """The supported lines as a user reads them: '3.7.x, 3.8.x, ..., 2025.x'."""
    return ", ".join([*(f"{a}.{b}.x" for a, b in SUPPORTED_LINES), f"{CURRENT_LINE_MAJOR}.x"])


def parse_pe_version(value: object) -> PeVersion:
    """'2019.8.5' -> (2019, 8, 5); '2019.8' -> (2019, 8): the generation model's reading,
    for any version from 3.7 (check_pe_version says which a stack may use). The patch level
    is kept: the steps gated on a patch release compare with it."""
    if not isinstance(value, str):
        raise ValueError(f"pe_version must be a string like '2019.8.5' or '3.7.2', not {value!r}")
    parts = value.split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"pe_version must look like '2019.8.5' or '3.7.2' (major.minor[.patch]), not {value!r}")
    version = tuple(int(p) for p in parts)
    if version[0] < 2015 and version[:2] < (3, 7):
        raise ValueError(f"pe_version {value!r} is older than PE 3.7, which this provider does not support")
    return version


def check_pe_version(value: object) -> PeVersion:
    """What check() accepts as a stack's pe_version: a supported line, with its patch level
    where a step depends on it. Raises ValueError naming the supported table."""
    version = parse_pe_version(value)
    line = version[:2]
    if line not in SUPPORTED_LINES and version[0] != CURRENT_LINE_MAJOR:
        raise ValueError(
            f"pe_version {value!r} is not a PE line this provider supports ({supported_table()}); "
            "set the version your primary runs (`cat /opt/puppetlabs/server/pe_version` there, "
            "`/opt/puppet/pe_version` on PE 3.x)"
        )
    if line in PATCH_GATED_LINES and len(version) < 3:
        raise ValueError(
            f"pe_version {value!r} needs its patch level (e.g. '{line[0]}.{line[1]}.9'): "
            f"{PATCH_GATED_LINES[line]}, so what the provider may run depends on it"
        )
    return version


def pe_line(value: object) -> str:
    """'2019.8.5' -> '2019.8': the generation a version belongs to (a patch upgrade is not
    a new generation: it changes no step's dialect that a master was provisioned with)."""
    return ".".join(str(value).split(".")[:2])


def puppet_major_for(version: PeVersion) -> int:
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
        # 2016.4.9 and 2017.2.5 (§5 [S23]): 2016.4.0-.8 and 2016.5-2017.2.4 reject them.
        install_service_flags=version >= (2017, 2, 5) or (2016, 4, 9) <= version < (2016, 5),
        # /status/v1/simple: "Introduced in Puppet Server 2.6.0" (Puppet Server docs, Simple
        # endpoint), first shipped in PE 2016.4 (§2 [S10]); PE 2015.2-2016.2 have 2.1-2.4.
        status_endpoint=version >= (2016, 4),
        token_lifetime_default="1h" if version >= (2019, 7) else ("5m" if version >= (2015, 3) else ""),
        crl_section="server" if puppet_major >= 6 else "master",
        master_class_params=(("enable_ca_proxy", True),) if pe3 else (),
        compiler_puppetdb=compiler_era,
        pg_ident_maps=PUPPETDB_PG_IDENT_MAPS if compiler_era else (),
        crl_refresh="run" if version >= (2017, 2) else ("reload" if version >= (2015, 3) else "restart"),
        primary_run=version >= (2015, 3),
        file_sync_conf="/etc/puppetlabs/puppetserver/conf.d/file-sync.conf" if version >= (2015, 3) else "",
    )
