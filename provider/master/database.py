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


def database_data_dir(ctx: Context, session: SshSession, step: str) -> str:
    """The running PE-PostgreSQL cluster's data directory on the database host."""
    generation = ctx.cfg.generation
    probe = session.run(database_access.probe_script(generation.postgresql_data_glob), timeout=60)
    probe.check(step, "look for PE-PostgreSQL's data directory")
    try:
        return database_access.data_dir_from_probe(probe.stdout, session.target.label, generation.postgresql_data_glob)
    except ProviderError as exc:
        raise ProviderError(f"[{session.target.label}] step '{step}': {exc}") from None


def grant_database_access(ctx: Context) -> None:
    """PE 2019.7+: PE-PostgreSQL maps this compiler's certificate to PuppetDB's roles in
    pg_ident.conf (and has reloaded it) before the compiler's first run starts its
    PuppetDB - peadm's plans/add_compiler.pp (pe-generations.md §6 [S29])."""
    cfg = ctx.cfg
    generation = cfg.generation
    if not generation.compiler_puppetdb:
        return
    session = require_database(ctx, "database access")
    data_dir = database_data_dir(ctx, session, "database access")
    maps, service = generation.pg_ident_maps, generation.postgresql_service
    script = database_access.ensure_script(data_dir, cfg.certname, maps, service)
    result = session.run(script, timeout=database_access.SCRIPT_TIMEOUT)
    result.check("database access", f"map {cfg.certname} in {data_dir}/{database_access.IDENT_FILE}")
    change = database_access.parse_summary(result.stdout)
    did = f"{change.lines} lines added for {cfg.certname}" if change.lines else f"{cfg.certname} already mapped"
    reloaded = f", {generation.postgresql_service} reloaded" if change.reloaded else ""
    ctx.log("database access", f"{database_access.IDENT_FILE}: {did}{reloaded} ({session.target.label}:{data_dir})")


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
    data_dir = database_data_dir(ctx, session, step)
    maps, service = generation.pg_ident_maps, generation.postgresql_service
    script = database_access.remove_script(data_dir, cfg.certname, maps, service)
    result = session.run(script, timeout=database_access.SCRIPT_TIMEOUT)
    result.check(step, f"remove {cfg.certname}'s lines from {data_dir}/{database_access.IDENT_FILE}")
    change = database_access.parse_summary(result.stdout)
    did = f"{change.lines} lines of {cfg.certname} removed" if change.lines else f"no line maps {cfg.certname}"
    reloaded = f", {generation.postgresql_service} reloaded" if change.reloaded else ""
    ctx.log(step, f"{database_access.IDENT_FILE}: {did}{reloaded} ({session.target.label}:{data_dir})")
