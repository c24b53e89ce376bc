"""What each resource's state says when all is well: the outputs its provider's diff takes
for "nothing drifted". One table for both ways the benches write a big deployment's state
without hosts: the harness's seed (scale_out.no_change_preview) and the real CLI's seeded
creates (seed/sitecustomize.py)."""

from __future__ import annotations

# (resource name suffix, provider class as pickled into state, healthy outputs)
HEALTHY: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("-master", "provider.compile_master.PeCompileMasterProvider", {"status": "running"}),
    ("-provisioning", "provider.compile_master_batch.CompileMasterBatchProvider", {"status": "provisioned"}),
    ("-code", "provider.file_sync.FileSyncProvider", {"status": "in sync"}),
    ("-infra-refresh", "provider.infra_refresh.InfraRefreshProvider", {"status": "whitelisted"}),
    ("-pool-admission", "provider.pool_admission.PoolAdmissionProvider", {"status": "admitted"}),
    ("-pool", "provider.pool_member.PoolMemberProvider", {"status": "UP"}),
)


def healthy_outputs(name: str) -> dict[str, str]:
    """The healthy outputs of the resource named `name` (by its suffix)."""
    return next(outputs for suffix, _, outputs in HEALTHY if name.endswith(suffix))
