"""PE generation profiles of the lab, as data: what each PE generation's hosts look like
from a non-login SSH shell, and what they refuse.

`lab up --pe-version X` (or `lab profile X` on a running lab) selects the profile of the
newest generation not newer than X. Every fact cites shared/facts/pe-generations.md
(section and its sources [Sn]); the lab's own code never reads these to be lenient,
only to refuse what a generation lacked. This module is pure and independent of the
product's own generation model (provider/pe/generation.py), so the lab checks the product
instead of agreeing with it by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

# The profiles the lab is tested with (the README's generation table has one column each).
# The primary's second HTTPS port on generations whose 8140 lacks `/puppet-ca/v1` (3.x).
LAB_CA_PORT = 8141

# Versions carry the patch level where a step depends on it: the 2016.4 profile is a
# 2016.4.x whose installer has the service flags (2016.4.9+, pe-generations.md §5 [S23]).
# 2025.12 is the current PE line (2025.x: Puppet 8; 2026.0, on Puppet 9, appeared in
# November 2026 and has no profile yet): docs/pe-platforms.md.
PROFILES = ("3.7", "2016.4.9", "2018.1", "2019.8", "2021.7", "2023.8", "2025.12")


@dataclass(frozen=True)
class Profile:
    pe_version: tuple[int, ...]  # (major, minor, patch): a version without one is its .0

    @property
    def label(self) -> str:
        return "PE " + ".".join(str(p) for p in self.pe_version)

    # --- agent packaging and paths (pe-generations.md §1, [S12,S13]) ------------------
    @property
    def puppet_major(self) -> int:
        """The agent's Puppet major version shipped by this PE ([S10,S11])."""
        v = self.pe_version
        if v < (2015, 2):
            return 3
        if v < (2017, 1):
            return 4
        if v < (2019, 0):
            return 5
        if v < (2021, 0):
            return 6
        if v < (2023, 0):
            return 7
        return 8

    @property
    def puppet_minor(self) -> int:
        """Enough of the minor version to gate `puppet config delete` (Puppet 5.4+, [S19]):
        PE 2017.3 ships Puppet 5.3, PE 2018.1 ships 5.5."""
        return 5 if self.pe_version >= (2018, 1) else 3 if self.puppet_major == 5 else 0

    @property
    def puppet_version(self) -> str:
        """What `puppet --version` says: a late release of that PE's Puppet ([S10,S11],
        the versions pe-generations.md §1 lists)."""
        if self.puppet_major == 5:
            return "5.5.22" if self.puppet_minor >= 5 else "5.3.7"
        return {3: "3.8.7", 4: "4.10.12", 6: "6.28.0", 7: "7.34.0", 8: "8.10.0"}[self.puppet_major]

    @property
    def aio(self) -> bool:
        """All-in-one packaging (puppet-agent) from PE 2015.2; PE 3.x has pe-* packages."""
        return self.pe_version >= (2015, 2)

    @property
    def bin_dir(self) -> str:
        """Public binaries: /opt/puppet/bin (3.x), /opt/puppetlabs/bin (AIO) [S12,S13]."""
        return "/opt/puppetlabs/bin" if self.aio else "/opt/puppet/bin"

    @property
    def install_root(self) -> str:
        """The directory a PE install creates (and an uninstall would remove)."""
        return "/opt/puppetlabs" if self.aio else "/opt/puppet"

    # Linked into /usr/local/bin by PE's packages: puppet, facter, hiera (+ pe-man, r10k,
    # mco); never puppetserver [S12,S13]. The lab links the ones it ships.
    LINKED = ("puppet", "facter", "hiera")

    @property
    def agent_service(self) -> str:
        """pe-puppet on PE 3.x, puppet on AIO [S12,S13] (pe-generations.md §10)."""
        return "puppet" if self.aio else "pe-puppet"

    # --- agent CLI (pe-generations.md §4, [S19]) ---------------------------------------
    @property
    def has_puppet_ssl(self) -> bool:
        """`puppet ssl` (submit_request, download_cert, bootstrap, ...) arrived in Puppet 6."""
        return self.puppet_major >= 6

    @property
    def has_certificate_face(self) -> bool:
        """`puppet certificate generate --ca-location remote`: Puppet <= 5 (removed in 6)."""
        return self.puppet_major <= 5

    @property
    def has_config_delete(self) -> bool:
        """`puppet config delete` from Puppet 5.4."""
        return self.puppet_major > 5 or (self.puppet_major == 5 and self.puppet_minor >= 4)

    @property
    def has_puppet_cert(self) -> bool:
        """`puppet cert` works on the CA host up to Puppet 5; a dead stub in 6, gone in 7."""
        return self.puppet_major <= 5

    # --- installer (pe-generations.md §5, [S23,S24]) ----------------------------------
    @property
    def installer_service_flags(self) -> bool:
        """`--puppet-service-ensure/-enable` from 2016.4.9 / 2017.2.5 [S23]; earlier
        installers (2016.4.0-2016.4.8, 2016.5-2017.2.4) reject them."""
        v = self.pe_version
        return v >= (2017, 2, 5) or (2016, 4, 9) <= v < (2016, 5)

    @property
    def installer_csr_attributes(self) -> bool:
        """`extension_requests:` / `custom_attributes:` arguments, new in 2016.4."""
        return self.pe_version >= (2016, 4)

    # --- PuppetDB's HTTP API (§6, [S26,S27]) --------------------------------------------
    @property
    def puppetdb_legacy_api(self) -> bool:
        """PuppetDB 2.x (PE 3.x): commands on /v3/commands (/v4 experimental), queries on
        /v3/...; `deactivate node` v2 takes the bare certname, `replace facts` names it
        `name`. PuppetDB 3.0+ (PE 2015.2+): /pdb/cmd/v1 and /pdb/query/v4 only."""
        return not self.aio

    def puppetdb_command_path(self) -> str:
        return "/v3/commands" if self.puppetdb_legacy_api else "/pdb/cmd/v1"

    def puppetdb_query_path(self, endpoint: str) -> str:
        """`nodes/<cn>` -> /v3/nodes/<cn> or /pdb/query/v4/nodes/<cn>."""
        return f"/v3/{endpoint}" if self.puppetdb_legacy_api else f"/pdb/query/v4/{endpoint}"

    # --- Puppet Server's HTTP API on 8140 (§2, [S10,S18]) ---------------------------------
    @property
    def status_simple(self) -> bool:
        """`GET /status/v1/simple`: "Introduced in Puppet Server 2.6.0" (Puppet Server's
        docs, Status API, Simple endpoint), which PE 2016.4 ships; PE 3.x's Puppet Server
        1.x has no status service, so a load balancer there checks TCP/TLS only."""
        return self.pe_version >= (2016, 4)

    @property
    def ca_v1_api(self) -> bool:
        """`/puppet-ca/v1/...` (and the status service) on 8140 from Puppet Server 2.x (PE
        2015.2); PE 3.x's Puppet Server 1.x answers only `/<env>/certificate...` there
        (pe-generations.md §2 [S15,S16])."""
        return self.aio

    @property
    def lab_ca_port(self) -> int:
        """Where the lab's own Puppet 7 tools reach the real CA's `/puppet-ca/v1` and
        `/status`: 8140 where the generation had them, else a second port of the primary's
        Puppet Server that no PE generation has (the product never uses it)."""
        return 8140 if self.ca_v1_api else LAB_CA_PORT

    # --- the CRL a Puppet Server serves with (§8 [S38]) ------------------------------------
    @property
    def crl_read_at_restart_only(self) -> bool:
        """Up to PE 2017.1 "the Puppet server process won't re-read the certificate
        revocation list until the service is restarted" (PE 3.7's node deactivation page;
        2015.3-2017.1: or reloaded, a HUP), on the primary and every compile master. The
        lab's servers then serve a copy of the CA's CRL taken at start or reload only."""
        return self.pe_version < (2017, 2)

    @property
    def crl_managed_by_puppet(self) -> bool:
        """From PE 2017.2 "the updated CRL is managed by Puppet and distributed to compile
        masters": the master profile's run brings the CA's CRL and reloads the server."""
        return not self.crl_read_at_restart_only

    @property
    def service_reload(self) -> bool:
        """`service pe-puppetserver reload` (a HUP) from PE 2015.3 ("you can restart the
        Puppet server by sending a HUP signal"); before, only a restart re-reads anything."""
        return self.pe_version >= (2015, 3)

    # --- PE-PostgreSQL and compilers' PuppetDB (§6, [S6,S29]) ------------------------------
    @property
    def postgresql_version(self) -> str:
        """PE-PostgreSQL's major version, which names its data directory: 11 in 2019.8 (the
        path in peadm's add_compiler plan [S29]); 17 from 2025.11 and 14 in 2023.x-2025.10
        (help.puppet.com/pe/current/topics/supported-postgresql-versions.htm: "PE 2025.11+ |
        PostgreSQL 17", "PE <= 2025.10 | PostgreSQL 14"); 9.x before 2019 inferred (i) from
        PE's release notes, not from a cited source."""
        v = self.pe_version
        if v >= (2025, 11):
            return "17"
        if v >= (2023, 0):
            return "14"
        if v >= (2019, 0):
            return "11"
        if v >= (2017, 3):
            return "9.6"
        return "9.4" if self.aio else "9.2"

    @property
    def postgresql_data(self) -> str:
        """The data directory (pg_hba.conf, pg_ident.conf): /opt/puppetlabs/server/data/
        postgresql/<v>/data on AIO; /opt/puppet/var/lib/pgsql/<v>/data on PE 3.x (i)."""
        if self.aio:
            return f"/opt/puppetlabs/server/data/postgresql/{self.postgresql_version}/data"
        return f"/opt/puppet/var/lib/pgsql/{self.postgresql_version}/data"

    @property
    def compilers_run_puppetdb(self) -> bool:
        """From 2019.7 PE Compiler declares the PuppetDB profile: each compiler runs PuppetDB
        against PE-PostgreSQL, admitted by its certificate through pg_ident.conf [S6,S29]."""
        return self.pe_version >= (2019, 7)

    # --- PuppetDB and console certificate lists (§6, §7, [S30,S31,S36,S37]) -------------
    @property
    def puppetdb_allowlist(self) -> str:
        name = "certificate-allowlist" if self.pe_version >= (2021, 1) else "certificate-whitelist"
        return f"/etc/puppetlabs/puppetdb/{name}"

    @property
    def console_allowlist(self) -> str:
        name = "rbac-certificate-allowlist" if self.pe_version >= (2021, 1) else "rbac-certificate-whitelist"
        return f"/etc/puppetlabs/console-services/{name}"

    # --- file sync on the primary (docs/resources/infra-refresh.md) ----------------------
    @property
    def file_sync_conf(self) -> str:
        """From PE 2015.3 (file sync) the primary's storage serves the certnames in
        `file-sync.client-certnames` of this file, which its Puppet run rebuilds from the
        masters PuppetDB knows (PE's puppet_enterprise::master::file_sync, seen in public
        copies (i); PE 2021.0's known issues name the setting and the file): why PE's add
        procedure ends with a run on the primary from 2015.3. "" before."""
        return "/etc/puppetlabs/puppetserver/conf.d/file-sync.conf" if self.pe_version >= (2015, 3) else ""

    # --- architectures (lab/config.py LAYOUTS; docs/lab.md "Layouts") --------------------
    @property
    def layouts(self) -> tuple[str, ...]:
        """PE's architectures in this generation, its common one first (docs-archive HEAD
        682c577c). Monolithic: "the recommended install type for most users" (pe/2016.4/
        install_pe_mono.markdown), "Monolithic installation (Recommended)" (2018.1
        choosing_an_architecture.md), renamed "standard" and, with compilers, "large" in
        2019.2 (release_notes_pe.md). Split: 3.x-2019.1, deprecated from 2018.1.8; "no longer
        supported, and you can't upgrade to this version with a split install" (2019.2
        release notes). Extra-large (PE-PostgreSQL on a node of its own): "Monolithic
        installation with compile masters and standalone PE-PostgreSQL" from 2019.0
        (choosing_an_architecture.md), "extra-large" from 2019.2."""
        layouts = ["monolithic"]
        if self.pe_version < (2019, 2):
            layouts.append("split")
        if self.pe_version >= (2019, 0):
            layouts.append("extra-large")
        return tuple(layouts)

    # --- RBAC tokens (§7, [S35]) -------------------------------------------------------
    @property
    def tokens(self) -> bool:
        return self.pe_version >= (2015, 3)

    @property
    def token_lifetime_default(self) -> int:
        """Seconds: 5 minutes up to 2019.5, 1 hour from 2019.7 (`puppet access login`)."""
        return 3600 if self.pe_version >= (2019, 7) else 300


def parse_version(version: str) -> tuple[int, int, int]:
    """'2019.8' -> (2019, 8, 0); '2016.4.9' -> (2016, 4, 9): a version without a patch level
    is the line's first release (the strictest reading: patch-gated features absent)."""
    parts = version.split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"PE version must look like 3.7, 2019.8 or 2016.4.9, not {version!r}")
    major, minor, patch = int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 0
    if major < 2015 and (major, minor) < (3, 7):
        raise ValueError(f"PE {version} is older than 3.7, the oldest generation the lab imitates")
    return major, minor, patch


def profile_for(version: str) -> Profile:
    return Profile(parse_version(version))


def other_allowlists(profile: Profile) -> list[str]:
    """The list files of the other naming: a generation that writes `...-allowlist` has no
    `...-whitelist` file and the other way round (switching a lab removes them)."""
    names = {
        "/etc/puppetlabs/puppetdb/certificate-whitelist",
        "/etc/puppetlabs/puppetdb/certificate-allowlist",
        "/etc/puppetlabs/console-services/rbac-certificate-whitelist",
        "/etc/puppetlabs/console-services/rbac-certificate-allowlist",
    }
    return sorted(names - {profile.puppetdb_allowlist, profile.console_allowlist})
