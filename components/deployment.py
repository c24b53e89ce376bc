"""PeDeployment: a PE deployment's compile masters as one component - a CompileMaster per
configured master (named by certname, so adding one never renames another) and ONE
InfraRefresh that depends on all of them, so PuppetDB, the console and (PE 2015.3+) the
primary each run once per change of the set, then every master joins the 8140 pool. From PE 2019.7 the masters
get PE-PostgreSQL's host (pe:database) for their pg_ident.conf lines, and when that is not
the PuppetDB host the InfraRefresh runs Puppet there first.
"""

from __future__ import annotations

from typing import Any, cast

import pulumi

from components.compile_master import (
    CompileMaster,
    Credentials,
    master_entry,
    member_entry,
    shared_master_inputs,
    shared_member_inputs,
    ssh_inputs,
)
from components.settings import DeploymentSpec
from provider.compile_master_batch import CompileMasterBatch, CompileMasterBatchArgs
from provider.infra_refresh import InfraRefresh, InfraRefreshArgs
from provider.pe.generation import generation_for
from provider.pool_admission import PoolAdmission, PoolAdmissionArgs

TYPE = "pe:index:PeDeployment"


class PeDeployment(pulumi.ComponentResource):
    batch: CompileMasterBatch
    masters: list[CompileMaster]
    refresh: InfraRefresh
    admission: PoolAdmission
    members: pulumi.Output[dict[str, str]]
    fingerprints: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, spec: DeploymentSpec, creds: Credentials, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        # The long work (install, sign, agent runs) of every master in ONE provider call:
        # the provider server runs 4 calls at once, so per-master creates would go in waves.
        self.batch = CompileMasterBatch(
            f"{name}-provisioning",
            cast(
                CompileMasterBatchArgs,
                {
                    **shared_master_inputs(spec, creds),
                    "masters": [master_entry(m, spec) for m in spec.masters],
                },
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.masters = [
            CompileMaster(m, spec, creds, self.batch, pulumi.ResourceOptions(parent=self)) for m in spec.masters
        ]
        refresh_args: dict[str, Any] = {
            "masters": [cm.master.certname for cm in self.masters],
            "puppetdb_host": spec.puppetdb.host,
            **ssh_inputs("puppetdb_ssh", spec.puppetdb, spec, creds.ssh_private_key),
            "console_host": spec.console.host,
            **ssh_inputs("console_ssh", spec.console, spec, creds.ssh_private_key),
            # The input keys keep their old names (they are in existing stacks' state).
            "puppetdb_whitelist": spec.puppetdb_allowlist,
            "console_whitelist": spec.console_allowlist,
        }
        generation = generation_for(spec.pe_version)
        if generation.primary_run:
            # PE 2015.3+: the primary's run ends PE's add procedure (its file sync storage
            # then serves the new masters); on the same host as PuppetDB it is that one run.
            refresh_args["primary_host"] = spec.primary.host
            refresh_args.update(ssh_inputs("primary_ssh", spec.primary, spec, creds.ssh_private_key))
            refresh_args["file_sync_conf"] = generation.file_sync_conf
        if generation.compiler_puppetdb and spec.database.host != spec.puppetdb.host:
            # PE-PostgreSQL on a host of its own: its run comes first (peadm add_compiler.pp [S29]).
            refresh_args["database_host"] = spec.database.host
            refresh_args.update(ssh_inputs("database_ssh", spec.database, spec, creds.ssh_private_key))
        for key, arg in (("connect", "connect_timeout"), ("run", "run_timeout")):
            if key in spec.timeouts:
                refresh_args[arg] = spec.timeouts[key]
        self.refresh = InfraRefresh(
            f"{name}-infra-refresh",
            cast(InfraRefreshArgs, refresh_args),
            pulumi.ResourceOptions(parent=self, depends_on=[cm.master for cm in self.masters]),
        )
        # Every new member added and health-gated in ONE call (same reason as the batch);
        # each PoolMember then finds its server UP and saved.
        self.admission = PoolAdmission(
            f"{name}-pool-admission",
            cast(
                PoolAdmissionArgs,
                {**shared_member_inputs(spec, creds), "members": [member_entry(m) for m in spec.masters]},
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[self.refresh]),
        )
        members = {cm.master_spec.certname: cm.join_pool(self.refresh, self.admission).status for cm in self.masters}
        fingerprints = {cm.master_spec.certname: cm.master.cert_fingerprint for cm in self.masters}
        self.members = pulumi.Output.all(**members) if members else pulumi.Output.from_input({})
        self.fingerprints = pulumi.Output.all(**fingerprints) if fingerprints else pulumi.Output.from_input({})
        self.register_outputs({"members": self.members, "fingerprints": self.fingerprints})
