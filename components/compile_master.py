"""CompileMaster: one host's FileSync, PeCompileMaster and PoolMember, wired so the pool
only ever sees a master that has its code, is classified and running, and is trusted by
PuppetDB and the console (the deployment's InfraRefresh).

Order on create: code -> master -> (every master, then InfraRefresh) -> pool member.
On removal Pulumi deletes in reverse: the member first (drained), then the master
(unpinned, revoked), then file sync. Only depends_on and inputs express this; no sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi

from components.settings import DeploymentSpec, HostAccess, MasterSpec
from provider.compile_master import PeCompileMaster, PeCompileMasterArgs
from provider.file_sync import FileSync, FileSyncArgs
from provider.pe.generation import generation_for
from provider.pool_member import PoolMember, PoolMemberArgs
from provider.ssh.trust import known_hosts_lines

TYPE = "pe:index:CompileMaster"


@dataclass(frozen=True)
class Credentials:
    """Secrets shared by the deployment's resources (each resource marks them secret)."""

    ssh_private_key: pulumi.Input[str]
    rbac_token: pulumi.Input[str] | None = None
    classifier_client_key: pulumi.Input[str] | None = None


def trust(prefix: str, access: HostAccess, spec: DeploymentSpec) -> dict[str, str]:
    """`<prefix>_host_key` when pinned, else `<prefix>_known_hosts` with the stack's
    known_hosts lines for this host only: a host key added for another host changes no
    resource's inputs, and a 50-master stack's state does not carry the file 300 times."""
    if access.host_key:
        return {f"{prefix}_host_key": access.host_key}
    lines = known_hosts_lines(spec.known_hosts, access.host, access.port)
    return {f"{prefix}_known_hosts": "".join(f"{line}\n" for line in lines)}


def ssh_inputs(prefix: str, access: HostAccess, spec: DeploymentSpec, key: pulumi.Input[str]) -> dict[str, Any]:
    """`<prefix>_port/_user/_private_key/_host_key|_known_hosts` for a resource's inputs."""
    return {
        f"{prefix}_port": access.port,
        f"{prefix}_user": access.user,
        f"{prefix}_private_key": key,
        **trust(prefix, access, spec),
    }


def _timeouts(spec: DeploymentSpec, mapping: dict[str, str]) -> dict[str, float]:
    return {arg: spec.timeouts[key] for key, arg in mapping.items() if key in spec.timeouts}


def master_entry(master: MasterSpec, spec: DeploymentSpec) -> dict[str, Any]:
    """A PeCompileMaster's per-master inputs (also one entry of CompileMasterBatch's `masters`)."""
    access = master.access
    return {
        "certname": master.certname,
        "host": access.host,
        "ssh_port": access.port,
        "ssh_user": access.user,
        **trust("ssh", access, spec),
        "dns_alt_names": master.dns_alt_names,
        # only when set: a stack without peadm keeps the inputs its state already has
        **({"availability_group": master.availability_group} if master.availability_group else {}),
    }


def peer_inputs(master: MasterSpec, spec: DeploymentSpec) -> dict[str, Any]:
    """PeCompileMaster's `peer_masters` - the deployment's other masters, whose CRL its delete
    refreshes (provider/pe/crl_refresh.py) - and the `ssh_known_hosts` that reaches them.

    A peer reached as this master is (same SSH port and user, keys from the stack's
    known_hosts) is one string, "certname host", and its known_hosts lines join the master's
    own; any other peer is a mapping with what differs. N masters list N - 1 peers each and
    the engine (de)serializes every value at every preview: strings keep a 50-master
    preview under a second (docs/performance.md). Diffs compare what a connection
    trusts (provider/core/inputs.py, trust_view), so a line added here changes nothing."""
    own = master.access
    entries: list[Any] = []
    listed: list[HostAccess] = []  # whose known_hosts lines the master's own text carries
    for m in spec.masters:
        access = m.access
        if m.certname == master.certname:
            listed.append(access)
        elif (access.port, access.user) == (own.port, own.user) and not access.host_key and not own.host_key:
            entries.append(f"{m.certname} {access.host}")
            listed.append(access)
        else:
            entries.append(
                {
                    "certname": m.certname,
                    "host": access.host,
                    **({"ssh_port": access.port} if access.port != own.port else {}),
                    **({"ssh_user": access.user} if access.user != own.user else {}),
                    **trust("ssh", access, spec),
                }
            )
    out: dict[str, Any] = {"peer_masters": entries}
    if len(listed) > 1:
        # In the deployment's order, so masters reached alike share one text: a preview parses
        # it once per host (provider/ssh/trust.py, pinned_keys), not once per master and peer.
        lines = [line for a in listed for line in known_hosts_lines(spec.known_hosts, a.host, a.port)]
        out["ssh_known_hosts"] = "".join(f"{line}\n" for line in dict.fromkeys(lines))
    return out


def shared_master_inputs(spec: DeploymentSpec, creds: Credentials) -> dict[str, Any]:
    """The inputs every master of the deployment shares: primary, PE version, classifier,
    PE-PostgreSQL's host (PE 2019.7+), deadlines."""
    out: dict[str, Any] = {
        "ssh_private_key": creds.ssh_private_key,
        "primary_host": spec.primary.host,
        **ssh_inputs("primary_ssh", spec.primary, spec, creds.ssh_private_key),
        "primary_certname": spec.primary_certname,
        "pe_version": spec.pe_version,
        "classifier_url": spec.classifier_url,
        "puppetdb_url": spec.puppetdb_url,
        **_timeouts(
            spec,
            {
                "connect": "connect_timeout",
                "install": "install_timeout",
                "sign": "sign_timeout",
                "run": "run_timeout",
                "service": "service_timeout",
                "api": "api_timeout",
            },
        ),
    }
    if generation_for(spec.pe_version).compiler_puppetdb:
        # PE 2019.7+: each new compiler's certificate is mapped in PE-PostgreSQL's pg_ident.conf.
        # Older generations get none of these inputs, so their stacks' state sees no change.
        out["database_host"] = spec.database.host
        out.update(ssh_inputs("database_ssh", spec.database, spec, creds.ssh_private_key))
    if creds.rbac_token is not None:
        out["rbac_token"] = creds.rbac_token
    else:
        out["classifier_client_cert"] = spec.classifier_client_cert
        out["classifier_client_key"] = creds.classifier_client_key
    return out


def member_entry(master: MasterSpec) -> dict[str, Any]:
    """A PoolMember's per-member inputs (also one entry of PoolAdmission's `members`)."""
    return {"server_name": master.certname, "address": master.pool_address, "weight": master.weight}


def shared_member_inputs(spec: DeploymentSpec, creds: Credentials) -> dict[str, Any]:
    """The pool inputs every member shares: load balancer, backend, health check, deadlines."""
    return {
        "lb_host": spec.lb.host,
        **ssh_inputs("lb_ssh", spec.lb, spec, creds.ssh_private_key),
        "backend": spec.lb_backend,
        "check_ca_file": spec.lb_check_ca_file,
        **_timeouts(spec, {"connect": "connect_timeout", "health": "health_timeout", "drain": "drain_timeout"}),
    }


class CompileMaster(pulumi.ComponentResource):
    """One compile master. `join_pool(refresh)` adds its pool member once the
    deployment's InfraRefresh exists (it depends on every master, so it comes later)."""

    file_sync: FileSync
    master: PeCompileMaster
    member: PoolMember | None

    def __init__(
        self,
        master: MasterSpec,
        spec: DeploymentSpec,
        creds: Credentials,
        batch: pulumi.Resource | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE, master.name, None, opts)
        self.spec, self.master_spec, self.creds = spec, master, creds
        self.member = None
        sync = spec.file_sync
        sync_args: dict[str, Any] = {
            "method": sync.method,
            "host": master.access.host,
            **ssh_inputs("ssh", master.access, spec, creds.ssh_private_key),
            "primary_host": spec.primary.host,
            **ssh_inputs("primary_ssh", spec.primary, spec, creds.ssh_private_key),
            "code_dir": sync.code_dir,
            "primary_code_dir": sync.primary_code_dir,
            "schedule": sync.schedule,
            "excludes": sync.excludes,
            **_timeouts(spec, {"connect": "connect_timeout", "sync": "sync_timeout"}),
        }
        if sync.method == "r10k":
            sync_args.update(
                {"r10k_remote": sync.r10k_remote, "r10k_cachedir": sync.r10k_cachedir, "r10k_bin": sync.r10k_bin}
            )
        # After the batch: its Check refuses what must not happen (a certname changed on the
        # same host) for the whole deployment, and the engine starts a registered resource's
        # step while later Checks still run, so nothing of a master may register before it.
        # The Python SDK registers a resource once what it depends on is done.
        self.file_sync = FileSync(
            f"{master.name}-code",
            cast(FileSyncArgs, sync_args),
            pulumi.ResourceOptions(parent=self, depends_on=[batch] if batch else []),
        )
        master_args: dict[str, Any] = {
            **master_entry(master, spec),
            **shared_master_inputs(spec, creds),
            **peer_inputs(master, spec),
        }
        if batch is not None:
            master_args["batch_provisioned"] = True  # the batch does the long work; this verifies
        self.master = PeCompileMaster(
            f"{master.name}-master",
            cast(PeCompileMasterArgs, master_args),
            pulumi.ResourceOptions(parent=self, depends_on=[self.file_sync, *([batch] if batch else [])]),
        )

    def join_pool(self, refresh: pulumi.Resource, admission: pulumi.Resource | None = None) -> PoolMember:
        """The 8140 pool member, after code, master, the deployment-wide refresh and (when
        given) the PoolAdmission that added and health-gated every new member at once."""
        spec, master = self.spec, self.master_spec
        member_args = {
            **member_entry(master),
            **shared_member_inputs(spec, self.creds),
            # The master's own output (the same certname): a *property* dependency, so when the
            # engine replaces the master (delete before replace), its calculateDependentReplacements
            # asks this member's Diff with server_name unknown - answered "replace" - and deletes
            # (drains) the member before the master's delete revokes its certificate; the member
            # is created again after the master. pulumi/pulumi pkg/resource/deploy/step_generator.go
            # (calculateDependentReplacements); depends_on alone never pulls a dependent in.
            "server_name": self.master.certname,
        }
        self.member = PoolMember(
            f"{master.name}-pool",
            cast(PoolMemberArgs, member_args),
            pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.master, self.file_sync, refresh, *([admission] if admission else [])],
            ),
        )
        self.register_outputs(
            {
                "certname": self.master.certname,
                "cert_fingerprint": self.master.cert_fingerprint,
                "pool_status": self.member.status,
                "code_digest": self.file_sync.digest,
            }
        )
        return self.member
