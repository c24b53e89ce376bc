"""The agent on a compile master host (pure): what install.bash is given, where each
generation puts `puppet`, which settings the steps read (`puppet config print`), and the
shell that undoes what install.bash wrote."""

from __future__ import annotations

import shlex
from typing import Any

from provider.core.command import CommandResult
from provider.core.errors import ForeignAgentError, ProviderError
from provider.master.certs import IssuedCert
from provider.master.config import MasterConfig
from provider.pe.agent_runs import RUN_LOCK_SETTING
from provider.pe.generation import PUPPET_BINARIES, Generation
from provider.pe.primary import parse_config_print

AGENT_SETTINGS = (
    "server",
    "certname",
    "hostcert",
    "hostprivkey",
    "hostcsr",
    "localcacert",
    RUN_LOCK_SETTING,
    "csr_attributes",
    "ssldir",
    "config",  # puppet.conf: delete strips what install.bash wrote there
    "classfile",  # the classes of the catalog the last run applied (master_run checks it)
)


IDENTITY_FILES = ("hostcert", "hostprivkey", "hostcsr")  # each `<dir>/<certname>.pem` by default


# What install.bash writes into puppet.conf for a master, removed again on delete.
AGENT_CONFIG_KEYS = ("server", "certname", "dns_alt_names", "environmentpath")


AGENT_CONFIG_SECTIONS = ("main", "agent")


def trusted_facts(cfg: MasterConfig, issued: IssuedCert | None) -> dict[str, Any]:
    """What the classifier matches for this node: its certname and the extensions its
    certificate really carries (never the ones we merely asked for)."""
    return {"certname": cfg.certname, "extensions": dict(issued.extensions) if issued else {}}


def install_arguments(cfg: MasterConfig) -> list[str]:
    """PE's install.bash arguments for this master: `section:key=value` (every generation),
    then the service flags where install.bash has them (2016.4+, pe-generations.md §5).
    certname goes in [main], as PE's docs and peadm write it."""
    generation = cfg.generation
    args = [f"main:certname={cfg.certname}"]
    if cfg.dns_alt_names:
        args.append(f"main:dns_alt_names={','.join(cfg.dns_alt_names)}")
    if cfg.environmentpath:
        args.append(f"main:environmentpath={cfg.environmentpath}")
    # The generation's (pp_auth_role): peadm's availability group is merged into
    # csr_attributes.yaml after the install (merge_csr_extension_requests), as peadm does.
    args += [f"extension_requests:{k}={v}" for k, v in generation.extension_requests]
    if generation.install_service_flags:
        args += ["--puppet-service-ensure", "stopped", "--puppet-service-enable", "false"]
    return args


def agent_probe_paths(generation: Generation) -> tuple[str, ...]:
    """Where to look for `puppet` on a master: this generation's path first, then the
    others', so an agent of another PE generation is seen rather than installed over."""
    return (generation.puppet_bin, *(p for p in PUPPET_BINARIES if p != generation.puppet_bin))


def agent_settings(
    found: list[str], generation: Generation, printed: CommandResult | None, host: str
) -> dict[str, str]:
    """What the host's agent is, from the probe (`found`: the probed paths that exist) and
    `puppet config print` (None when not run). No `puppet` at the generation's path and
    none elsewhere: no agent ({}), install.bash brings one. Any failure to print the
    settings means we cannot tell - never "no agent", or we would install over one."""
    if generation.puppet_bin not in found:
        if found:
            raise ForeignAgentError(
                f"[{host}] step 'preflight': this host has a Puppet agent at {found[0]}, not at "
                f"{generation.puppet_bin} where {generation.label} keeps it; check pe_version, or decommission "
                "that agent first (PE requires a host without an agent)"
            )
        return {}
    if printed is None or printed.exit_status != 0:
        status = "not run" if printed is None else f"exit {printed.exit_status}"
        tail = f":\n{printed.tail(5)}" if printed is not None else ""
        raise ProviderError(
            f"[{host}] cannot tell whether/which Puppet agent is configured: `{generation.puppet_bin} config print` "
            f"failed ({status}); fix the agent on the host (or remove it) and run `pulumi up` again{tail}"
        )
    settings = parse_config_print(printed.stdout)
    missing = [k for k in AGENT_SETTINGS if k not in settings]
    if missing:
        raise ProviderError(
            f"[{host}] cannot tell which Puppet agent is configured: `{generation.puppet_bin} config print` "
            f"did not show {', '.join(missing)}"
        )
    return settings


def remove_stale_script(paths: dict[str, str]) -> str:
    """Remove each existing file of {label: path}, printing the labels of those removed."""
    q = shlex.quote
    parts = [f"if test -e {q(path)}; then rm -f {q(path)}; echo {q(label)}; fi" for label, path in paths.items()]
    return "set -e; " + "; ".join(parts) if parts else "true"


# Lines before the first [section] are [main]'s; a key line is `name = value`.
_STRIP_AWK = (
    r'BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) drop[k[i]] = 1; '
    r'n = split(sections, s, " "); for (i = 1; i <= n; i++) wanted[s[i]] = 1; section = "main" } '
    r'/^[ \t]*\[[^]]*\][ \t]*$/ { section = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", section); print; next } '
    r'{ name = $0; sub(/^[ \t]*/, "", name); sub(/[ \t]*=.*$/, "", name) } '
    r"(section in wanted) && (name in drop) && /=/ { next } "
    r"{ print }"
)


def puppet_conf_strip_script(conf: str, keys: tuple[str, ...], sections: tuple[str, ...]) -> str:
    """Remove these keys from these sections of puppet.conf in place (owner and mode kept):
    what `puppet config delete` does (Puppet 5.4+ only), in one awk on every generation,
    not a Ruby start-up per key and section. A missing file has nothing to remove."""
    q = shlex.quote
    awk = shlex.join(["awk", "-v", f"keys={' '.join(keys)}", "-v", f"sections={' '.join(sections)}", _STRIP_AWK])
    return (
        f'f={q(conf)}; test -f "$f" || exit 0; tmp=$(mktemp "$f.XXXXXX"); '
        f'if {awk} "$f" > "$tmp" && cat "$tmp" > "$f"; then rm -f "$tmp"; else rm -f "$tmp"; exit 1; fi'
    )


def agent_after_install(before: dict[str, str], certname: str, server: str) -> dict[str, str] | None:
    """The agent's settings once install.bash has set certname and server, derived from
    those read before it (the agent was already on the host: a base image, the lab's
    hosts) instead of another `puppet config print` (~1 CPU-s). Puppet's defaults name the
    identity files `<dir>/<certname>.pem`, and install.bash's arguments move no directory.
    None when `before` is empty or does not follow that layout: read them again then."""
    old = before.get("certname", "")
    if not old:
        return None
    after = {**before, "certname": certname, "server": server}
    for key in IDENTITY_FILES:
        path, suffix = before.get(key, ""), f"/{old}.pem"
        if not path.endswith(suffix):
            return None
        after[key] = f"{path[: -len(suffix)]}/{certname}.pem"
    return after
