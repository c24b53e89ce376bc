"""PE 2019.7+: a compiler's own PuppetDB reaches PE-PostgreSQL by certificate, and only
through its three pg_ident.conf lines on the database host (peadm's add_compilers plan);
added before the compiler's runs, removed on delete."""

from __future__ import annotations

from provider.core.errors import ProviderError
from provider.master.config import DATABASE_REQUIRED
from provider.master.context import Context
from provider.pe import database_access
from provider.ssh.session import SshSession


def require_database(ctx: Context, step: str) -> SshSession:
    """The database host's session; check() refuses a 2019.7+ master without one."""
    if ctx.database is None:
        raise ProviderError(f"[{ctx.cfg.host}] step '{step}': {DATABASE_REQUIRED}")
    return ctx.database


def ident_file(ctx: Context, session: SshSession, step: str) -> database_access.IdentFile:
    """The running PE-PostgreSQL cluster's pg_ident.conf on the database host, with the
    generation's PuppetDB maps and PostgreSQL service."""
    generation = ctx.cfg.generation
    probe = session.run(database_access.probe_script(generation.postgresql_data_glob), timeout=60)
    probe.check(step, "look for PE-PostgreSQL's data directory")
    try:
        data_dir = database_access.data_dir_from_probe(
            probe.stdout, session.target.label, generation.postgresql_data_glob
        )
    except ProviderError as exc:
        raise ProviderError(f"[{session.target.label}] step '{step}': {exc}") from None
    return database_access.IdentFile(data_dir, generation.pg_ident_maps, generation.postgresql_service)


def edit(session: SshSession, step: str, script: str, doing: str) -> database_access.Change:
    """Run one of IdentFile's scripts (they take its lock, check first and verify after)."""
    result = session.run(script, timeout=database_access.SCRIPT_TIMEOUT)
    result.check(step, doing)
    return database_access.parse_summary(result.stdout)


def grant_database_access(ctx: Context) -> None:
    """PE 2019.7+: PE-PostgreSQL maps this compiler's certificate to PuppetDB's roles in
    pg_ident.conf (and has reloaded it) before the compiler's first run starts its
    PuppetDB - peadm's plans/add_compiler.pp (pe-generations.md §6 [S29])."""
    cfg = ctx.cfg
    if not cfg.generation.compiler_puppetdb:
        return
    step = "database access"
    session = require_database(ctx, step)
    ident = ident_file(ctx, session, step)
    change = edit(session, step, ident.ensure_script(cfg.certname), f"map {cfg.certname} in {ident.path}")
    did = f"{change.lines} lines added for {cfg.certname}" if change.lines else f"{cfg.certname} already mapped"
    reloaded = f", {ident.service} reloaded" if change.reloaded else ""
    ctx.log(step, f"{database_access.IDENT_FILE}: {did}{reloaded} ({session.target.label}:{ident.data_dir})")


def remove_database_access(ctx: Context) -> None:
    """PE 2019.7+, on delete: this compiler's own pg_ident.conf lines go (no other
    certname's), and PostgreSQL reloads. Undocumented by PE (pe-generations.md §8): the
    reverse of what grant_database_access added."""
    cfg = ctx.cfg
    generation = cfg.generation
    if not generation.compiler_puppetdb:
        return
    step = "remove database access"
    if ctx.database is None:  # state recorded before the database inputs existed
        lines = "; ".join(database_access.ident_lines(cfg.certname, generation.pg_ident_maps))
        ctx.log(
            step,
            f"no database_host in this master's state (recorded by an older version): its {database_access.IDENT_FILE} "
            f"lines stay on the PE-PostgreSQL host; remove them there and reload {generation.postgresql_service}: "
            f"{lines}",
        )
        return
    session = ctx.database
    ident = ident_file(ctx, session, step)
    change = edit(session, step, ident.remove_script(cfg.certname), f"remove {cfg.certname}'s lines from {ident.path}")
    did = f"{change.lines} lines of {cfg.certname} removed" if change.lines else f"no line maps {cfg.certname}"
    reloaded = f", {ident.service} reloaded" if change.reloaded else ""
    ctx.log(step, f"{database_access.IDENT_FILE}: {did}{reloaded} ({session.target.label}:{ident.data_dir})")
