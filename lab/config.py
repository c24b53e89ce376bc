"""The lab's shape: which hosts exist, their addresses and roles, and where state lives.

Pure data and pure helpers only; nothing here touches the machine. Everything the lab
does (lab.hosts, lab.deploy) and everything the tests ask (lab.client) is derived from
these values, so changing the roster happens in one place.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.generations import Profile, parse_version, profile_for

DOMAIN = "pelab.test"
ETC_HOSTS_BEGIN = "# BEGIN pelab (managed by `lab up`, removed by `lab down`)"
ETC_HOSTS_END = "# END pelab"
COMPILE_HOST_COUNT = 16

# Latency knobs: seconds added to the agent install and to the runs of each role, so the
# benchmark can model real minutes in seconds. Read at run time by inhost/bin/pelab-delay.
KNOB_NAMES = (
    "install",
    "master_run",
    "puppetdb_run",
    "console_run",
    # fault injection (tests/faults): the console's node-group calls slowed by N seconds, or
    # answered with this HTTP status
    "console_groups_delay",
    "console_groups_status",
)


@dataclass(frozen=True)
class HostSpec:
    """One lab host: an sshd in its own mount+UTS namespace on its own loopback address."""

    short: str
    address: str
    role: str  # primary | console | puppetdb | lb | compile

    @property
    def fqdn(self) -> str:
        return f"{self.short}.{DOMAIN}"


def roster(compile_count: int = COMPILE_HOST_COUNT) -> list[HostSpec]:
    """Every host of the lab, infrastructure first, then compile01..compileNN."""
    hosts = [
        HostSpec("primary", "127.0.10.2", "primary"),
        HostSpec("console", "127.0.10.3", "console"),
        HostSpec("puppetdb", "127.0.10.4", "puppetdb"),
        HostSpec("lb", "127.0.10.5", "lb"),
    ]
    hosts += [HostSpec(f"compile{i:02d}", f"127.0.10.{10 + i}", "compile") for i in range(1, compile_count + 1)]
    return hosts


def host_by_short(short: str) -> HostSpec:
    for host in roster():
        if host.short == short or host.fqdn == short:
            return host
    raise KeyError(f"no lab host named {short!r}")


# PE's architectures, as the hosts that hold PuppetDB, the console and PE-PostgreSQL (the
# primary always holds the CA and compiles). Sources and the generations each belongs to:
# docs/lab.md, "Layouts"; lab/generations.py Profile.layouts.
#   split        PuppetDB (with its PostgreSQL) and the console each on a host of their own:
#                PE 3.x-2018.1's "split install", a legacy layout from 2019.0;
#   monolithic   all on the primary: PE 3.x-2018.1's "monolithic install", 2019.0+'s
#                "standard" (and "large" once compilers are added) architecture;
#   extra-large  PuppetDB and the console on the primary, PE-PostgreSQL on a node of its own
#                (the lab's `puppetdb` host, which then runs only PostgreSQL): PE 2019.8+.
INFRA_ROLES = ("puppetdb", "console", "database")
LAYOUTS: dict[str, dict[str, str]] = {
    "split": {"puppetdb": "puppetdb", "console": "console", "database": "puppetdb"},
    "monolithic": {"puppetdb": "primary", "console": "primary", "database": "primary"},
    "extra-large": {"puppetdb": "primary", "console": "primary", "database": "puppetdb"},
}


def role_host(role: str, layout: str) -> HostSpec:
    """The lab host that holds an infrastructure role (puppetdb, console, database) in a layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown lab layout {layout!r} (known: {', '.join(LAYOUTS)})")
    return host_by_short(LAYOUTS[layout][role])


def infra_hosts(layout: str) -> list[HostSpec]:
    """The hosts PE is installed on as infrastructure in this layout, the primary first."""
    shorts = ["primary", *(LAYOUTS[layout][role] for role in INFRA_ROLES)] if layout in LAYOUTS else ["primary"]
    return [host_by_short(s) for s in dict.fromkeys(shorts)]


def infra_certnames(layout: str) -> list[str]:
    """Certnames PE's installer trusts from the start (whitelists are seeded with them)."""
    return [h.fqdn for h in infra_hosts(layout)]


def etc_hosts_block(hosts: list[HostSpec]) -> str:
    lines = [ETC_HOSTS_BEGIN]
    lines += [f"{h.address}\t{h.fqdn} {h.short}" for h in hosts]
    # PE convention: agents and the load balancer's pool are reached as `puppet`.
    lines.append(ETC_HOSTS_END)
    return "\n".join(lines) + "\n"


def replace_etc_hosts_block(text: str, block: str | None) -> str:
    """Return /etc/hosts text with our marked block replaced (or removed when block is None)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        if stripped == ETC_HOSTS_BEGIN:
            skipping = True
            continue
        if skipping:
            if stripped == ETC_HOSTS_END:
                skipping = False
            continue
        out.append(line)
    result = "".join(out)
    if block is not None:
        if result and not result.endswith("\n"):
            result += "\n"
        result += block
    return result


@dataclass
class LabSettings:
    """Switches of the lab, persisted in <root>/lab.json so every in-host script sees them."""

    # PE version the console and the CA tools behave as: "3.7", "2016.4", "2019.8", ...
    pe_version: str = "2019.8"
    # ca.conf allow-subject-alt-names (off exercises the CA's refusal path).
    allow_alt_names: bool = True
    # Compile hosts whose master class starts a real Puppet Server; others get the light
    # stand-in (same contract: /status/v1/simple, catalogs only while PuppetDB trusts it).
    real_compile_hosts: list[str] = field(default_factory=lambda: ["compile01"])
    knobs: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in KNOB_NAMES})
    # Which hosts hold PuppetDB, the console and PE-PostgreSQL (LAYOUTS); "" is the
    # generation's common one (Profile.layouts).
    layout: str = ""

    @property
    def profile(self) -> Profile:
        return profile_for(self.pe_version)

    @property
    def active_layout(self) -> str:
        return self.layout or self.profile.layouts[0]

    def role_host(self, role: str) -> HostSpec:
        return role_host(role, self.active_layout)

    def to_json(self, root: Path) -> str:
        data = asdict(self)
        data["root"] = str(root)
        data["domain"] = DOMAIN
        data["primary"] = host_by_short("primary").fqdn
        for role in INFRA_ROLES:  # certnames, as the in-host programs compare them
            data[role] = self.role_host(role).fqdn
        data["active_layout"] = self.active_layout
        data["infra_certnames"] = infra_certnames(self.active_layout)
        data["hosts"] = {h.fqdn: {"address": h.address, "role": h.role} for h in roster()}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabSettings:
        data = json.loads(text)
        fields = ("pe_version", "allow_alt_names", "real_compile_hosts", "knobs", "layout")
        known = {k: data[k] for k in fields if k in data}
        return cls(**known)


def lab_root() -> Path:
    """Where the lab keeps its state; override with PELAB_ROOT (tests keep the default)."""
    return Path(os.environ.get("PELAB_ROOT", "/var/lib/pelab"))


def parse_pe_version(version: str) -> tuple[int, int, int]:
    """'2019.8' -> (2019, 8, 0); '2016.4.9' -> (2016, 4, 9). Raises ValueError on anything else."""
    return parse_version(version)
