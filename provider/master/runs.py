"""Phase 4, the master's Puppet runs: the first run, then a second one only when
classification changed after the first (the first already applied the master profile on
PE 2019.7+)."""

from __future__ import annotations

from provider.master.context import Context, agent_run

MASTER_CLASS = "puppet_enterprise::profile::master"


def first_run(ctx: Context) -> None:
    agent_run(ctx, ctx.host, "first agent run", ctx.cfg.run_timeout)
    path = ctx.agent.get("classfile", "")
    ctx.first_run_classes = applied_classes((ctx.host.get(path) or b"").decode(errors="replace") if path else "")
    ctx.log("first agent run", "done" + (f" ({MASTER_CLASS} applied)" if MASTER_CLASS in ctx.first_run_classes else ""))


def applied_classes(classfile: str) -> frozenset[str]:
    """The classes in an agent's classfile (`classes.txt`: one per line, written by every run
    that applies a catalog)."""
    return frozenset(line.strip() for line in classfile.splitlines() if line.strip())


def master_run_needed(first_run_classes: frozenset[str], reclassified: bool) -> bool:
    """PE's order is run, pin, run again: the second run applies the master profile the pin
    brought. Where the first run's catalog already had it and classify changed nothing after
    (PE 2019.7+: PE Compiler classifies by the certificate's pp_auth_role, so PE's docs run
    Puppet once on a new compiler; or a resumed master already pinned), a second run would
    apply the same catalog again: ~3 CPU-s of Ruby per master for nothing."""
    return reclassified or MASTER_CLASS not in first_run_classes


def master_run(ctx: Context) -> None:
    if not master_run_needed(ctx.first_run_classes, ctx.reclassified):
        ctx.log(
            "master run",
            f"skipped: the first run already applied {MASTER_CLASS} and nothing was reclassified since "
            "(the compile service is verified next)",
        )
        return
    agent_run(ctx, ctx.host, "master run", ctx.cfg.run_timeout)
    ctx.log("master run", "catalog with the master profile applied")
