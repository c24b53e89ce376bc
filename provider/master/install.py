"""Phase 1 of PE's procedure, the agent: refuse a host whose agent is someone else's, hold
the agent service while we work, run install.bash with the master's certname and DNS alt
names (and the trusted facts PE and peadm match on), and place the PE CA."""

from __future__ import annotations

from provider.core.errors import ForeignAgentError, ProviderError
from provider.master.agent import agent_after_install, install_arguments
from provider.master.certs import fingerprint_of_pem
from provider.master.config import PEADM_AVAILABILITY_GROUP_OID
from provider.master.context import Context, fetch_ca_pem, read_agent
from provider.pe import services
from provider.pe.agent_runs import file_exists


def preflight(ctx: Context) -> None:
    """Refuse a host whose agent belongs to someone else; resume one that is ours."""
    agent = read_agent(ctx)
    cfg = ctx.cfg
    if not agent:
        ctx.log("preflight", "no Puppet agent yet; install.bash will bring it")
        return
    has_cert = file_exists(ctx.host, agent.get("hostcert", "/nonexistent"))
    has_key = file_exists(ctx.host, agent.get("hostprivkey", "/nonexistent"))
    server = agent.get("server", "")
    server_is_ours = server in {cfg.primary_certname, cfg.primary_host}
    configured = has_cert or has_key or server not in ("", "puppet")
    ctx.agent_configured = configured
    if configured and (not server_is_ours or agent.get("certname") != cfg.certname):
        raise ForeignAgentError(
            f"[{cfg.host}] step 'preflight': this host already runs a Puppet agent that is not ours "
            f"(server={server or '?'}, certname={agent.get('certname', '?')}); PE requires a host without an agent. "
            "Decommission that agent first, or use `adopt` if it is already a healthy compile master of this primary."
        )
    ctx.log(
        "preflight",
        "agent already configured for this primary and certname: resuming"
        if configured
        else "host reachable, no agent configured",
    )


def stop_agent_service(ctx: Context) -> None:
    if not ctx.agent_configured:
        # No agent of ours (nor anyone's) is configured, so no service of ours to stop, and
        # install.bash runs with --puppet-service-ensure stopped. Saves a Ruby start-up.
        ctx.agent_service_was = "stopped"
        return
    service = ctx.cfg.generation.agent_service  # pe-puppet in PE 3.x, puppet after (§10)
    state = ctx.host.run(services.service_state_script(service), timeout=120)
    state.check("read the agent service's state")
    ctx.agent_service_was = "running" if state.stdout.strip() == "running" else "stopped"
    if ctx.agent_service_was == "running":
        ctx.host.run(services.service_script(service, "stopped"), timeout=120).check("stop the agent service")
        ctx.log("agent service", f"{service} stopped for the procedure")


def restore_agent_service(ctx: Context, succeeded: bool) -> None:
    want = "running" if succeeded else (ctx.agent_service_was or "stopped")
    service = ctx.cfg.generation.agent_service
    result = ctx.host.run(services.service_script(service, want, enable=want == "running"), timeout=120)
    if result.exit_status == 0:
        ctx.log("agent service", f"{service} {want}")
    elif succeeded:
        result.check("start the agent service")


def install_agent(ctx: Context) -> None:
    """PE's install.bash, fetched from the primary and verified against the PE CA."""
    cfg = ctx.cfg
    ca_pem = fetch_ca_pem(ctx)
    ctx.log("trust", f"PE CA {fingerprint_of_pem(ca_pem.encode())[:23]}... read from the primary over pinned SSH")
    agent = ctx.agent
    if (
        agent
        and agent.get("certname") == cfg.certname
        and agent.get("server") in (cfg.primary_certname, cfg.primary_host)
    ):
        for key in ("hostcert", "hostprivkey"):
            if file_exists(ctx.host, agent.get(key, "/nonexistent")):
                # Resume: the host already has our identity; signing checks what it asked for.
                ctx.log("install", f"agent already installed for {cfg.certname} ({key} present): skipped")
                merge_csr_extension_requests(ctx)
                return
    # Named per certname: hosts that share a /tmp (the lab's do) must not race each other.
    tmp_ca = f"/tmp/pe-compile-masters-{cfg.certname}-ca.pem"
    ctx.host.put(tmp_ca, ca_pem.encode())
    localcacert = agent.get("localcacert", "")
    if localcacert:  # the agent will trust this CA, never one fetched on first use
        place_ca(ctx, localcacert, ca_pem)
    url = f"https://{cfg.primary_certname}:8140/packages/current/install.bash"
    script = f"/tmp/pe-compile-masters-{cfg.certname}-install.bash"
    ctx.host.run(["curl", "-sSf", "--max-time", "120", "--cacert", tmp_ca, "-o", script, url], timeout=180).check(
        "download install.bash", f"from {url}, verified against the PE CA"
    )
    result = ctx.host.run(["bash", script, *install_arguments(cfg)], timeout=cfg.install_timeout)
    result.check("install.bash", "PE's agent installer failed")
    ctx.installed.update({"agent_config": True, "csr_attributes": bool(cfg.extension_requests)})
    derived = agent_after_install(agent, cfg.certname, cfg.primary_certname)
    if derived and file_exists(ctx.host, derived["hostprivkey"]):
        ctx.agent = derived  # verified: install.bash made the key where the derivation says
    else:
        if not read_agent(ctx):
            raise ProviderError(
                f"[{cfg.host}] step 'install': install.bash succeeded but there is no {cfg.generation.puppet_bin}"
            )
        if ctx.agent["localcacert"] and ctx.agent["localcacert"] != localcacert:
            # A bare host (PE's case): the agent's CA path is known only now. Place the CA read
            # over pinned SSH before any CSR is submitted, so the agent never fetches one on
            # first use (Puppet does when the file is missing).
            place_ca(ctx, ctx.agent["localcacert"], ca_pem)
    merge_csr_extension_requests(ctx)
    ctx.log("install", f"agent installed: certname {cfg.certname}, alt names {','.join(cfg.dns_alt_names) or '-'}")


def merge_csr_extension_requests(ctx: Context) -> None:
    """peadm's availability group into the agent's csr_attributes.yaml before its CSR, merged
    with what install.bash wrote (peadm's util::insert_csr_extension_requests, merge: true).
    PE 2019.7+ only, where install.bash runs with the service stopped: no CSR exists yet."""
    cfg = ctx.cfg
    if not cfg.availability_group:
        return
    import yaml

    path = ctx.agent.get("csr_attributes", "")
    if not path:
        raise ProviderError(f"[{cfg.host}] step 'install': the agent names no csr_attributes file")
    text = ctx.host.get(path)
    data = yaml.safe_load(text) if text else {}
    data = data if isinstance(data, dict) else {}
    wanted = dict(data.get("extension_requests") or {})
    if wanted.get(PEADM_AVAILABILITY_GROUP_OID) == cfg.availability_group:
        return
    wanted[PEADM_AVAILABILITY_GROUP_OID] = cfg.availability_group
    data["extension_requests"] = wanted
    ctx.host.put(path, yaml.safe_dump(data, default_flow_style=False).encode())
    ctx.log("install", f"csr_attributes.yaml: peadm_availability_group={cfg.availability_group} added")


def place_ca(ctx: Context, path: str, ca_pem: str) -> None:
    ctx.host.run(["mkdir", "-p", path.rsplit("/", 1)[0]], timeout=60).check("prepare ssldir")
    ctx.host.put(path, ca_pem.encode())
