"""Phase 2, the certificate: sign the master's request on the CA with its DNS alt names
(`puppet cert --allow-dns-alt-names sign` up to 2018.1, the CA's API after), verify what
the CA issued, and clean a stale request or identity first so a repeat never doubles it."""

from __future__ import annotations

import shlex

from provider.core.errors import CaRefusedError, ProviderError, SanMismatchError
from provider.master.agent import IDENTITY_FILES, remove_stale_script
from provider.master.certs import IssuedCert, missing_extensions
from provider.master.config import MasterConfig
from provider.master.context import Context, ca_entry
from provider.master.install import install_agent
from provider.pe import ca
from provider.pe.agent_runs import file_exists


def host_csr_fingerprint(ctx: Context) -> str | None:
    csr = ctx.agent.get("hostcsr", "")
    if not csr or not file_exists(ctx.host, csr):
        return None
    # openssl dgst, not sha256sum (coreutils 6.0; RHEL 5 has 5.97): "(stdin)= <hex>" or
    # "SHA256(stdin)= <hex>" by version - the last word is the digest.
    der = ctx.host.run(f"openssl req -in {shlex.quote(csr)} -outform DER | openssl dgst -sha256", timeout=60)
    der.check("fingerprint our CSR")
    digest = der.stdout.split()[-1].upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def clean_host_identity(ctx: Context) -> None:
    """Remove the host's key/cert/CSR for our certname so a fresh CSR can be made."""
    paths = [ctx.agent.get(k, "") for k in IDENTITY_FILES]
    if ctx.agent.get("ssldir"):  # the agent's own ssldir only: its default differs per generation
        paths.append(f"{ctx.agent['ssldir']}/public_keys/{ctx.cfg.certname}.pem")
    paths = [p for p in paths if p]
    if paths:
        ctx.host.run(["rm", "-f", *paths], timeout=60).check("clean the host's certificate")


def remove_stale_request(ctx: Context) -> list[str]:
    """The CA has no request or certificate for us: a CSR or certificate on the host is
    stale (the CA forgot it). Remove those, never the key: the CSR tools reuse it."""
    paths = {k: ctx.agent.get(k, "") for k in ("hostcsr", "hostcert")}
    script = remove_stale_script({k: v for k, v in paths.items() if v})
    result = ctx.host.run(script, timeout=60).check("remove a stale CSR or certificate")
    return result.stdout.split()


def clean_on_ca_command(cfg: MasterConfig) -> list[str]:
    generation = cfg.generation
    return ca.clean_command(generation.ca_cli, generation.ca_bin, cfg.certname)


def sign_certificate(ctx: Context) -> None:
    cfg = ctx.cfg
    for _ in range(3):
        entry = ca_entry(ctx)
        host_has_key = file_exists(ctx.host, ctx.agent.get("hostprivkey", "/nonexistent"))
        wanted = cfg.generation.extension_requests
        as_requested = entry is not None and (
            ca.sans_match(entry, cfg.certname, cfg.dns_alt_names) and not missing_extensions(entry.extensions, wanted)
        )
        if entry and entry.state == "signed" and as_requested and host_has_key:
            ctx.log("sign", "already signed with the requested alt names and extensions: skipped")
            return
        if entry and (entry.state == "revoked" or (entry.state == "signed" and not (as_requested and host_has_key))):
            # As peadm does: a certificate without the SANs or extensions wanted is re-issued.
            why = (
                "revoked"
                if entry.state == "revoked"
                else (
                    "signed with other alt names or extensions" if host_has_key else "signed but the host lost its key"
                )
            )
            ctx.log("sign", f"certificate {why}: cleaning it on the CA and requesting a new one")
            # As the removal does (Primary.clean): on puppetserver-ca generations the CA's
            # HTTP API, one connection per request. `puppetserver ca clean` sends its DELETE
            # on the connection its revoke used, and Puppet Server 7 reloads its TLS context
            # with the new CRL in between: the DELETE then waits out Jetty's 30 s idle
            # timeout before the CLI retries it (measured on the lab's Puppet Server 7.9.5 and
            # puppetserver-ca 2.4.0; OpenVoxProject/openvox-server#25 reports the same delay).
            ctx.primary_ca.clean(cfg.certname, entry.state == "signed", cfg.sign_timeout)
            clean_host_identity(ctx)
            ctx.agent = {}
            install_agent(ctx)
            continue
        if entry is None:
            # The usual first pass: PE's install.bash with --puppet-service-ensure stopped does
            # no Puppet run, so it submitted no CSR (pe-generations.md §5). Submit it here.
            stale = remove_stale_request(ctx)
            ctx.log(
                "sign",
                "no CSR on the CA: submitting one"
                + (f" (removed the host's stale {', '.join(stale)})" if stale else "")
                + (" with the host's key" if host_has_key else ""),
            )
            ctx.host.run(cfg.generation.csr_command(cfg.certname), timeout=cfg.sign_timeout).check(
                "submit the CSR", f"the agent submits it to {cfg.primary_certname}:8140"
            )
            continue
        # A pending request: sign it only if it is ours and asks for exactly our names.
        ours = host_csr_fingerprint(ctx)
        if ours is None or ours != entry.fingerprint:
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the pending CSR for {cfg.certname} (fingerprint "
                f"{entry.fingerprint[:23]}...) is not the one on {cfg.host}; refusing to sign someone else's request. "
                f"Inspect it on the CA and clean it (`{' '.join(clean_on_ca_command(cfg))}`) if it is stale."
            )
        if not ca.sans_match(entry, cfg.certname, cfg.dns_alt_names):
            want = sorted(ca.expected_sans(cfg.certname, cfg.dns_alt_names))
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the CSR for {cfg.certname} asks for SANs {sorted(entry.sans)}, "
                f"not the requested {want}; refusing to sign. Fix dns_alt_names or the host's puppet.conf."
            )
        lacking = missing_extensions(entry.extensions, wanted)
        if lacking:
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the CSR for {cfg.certname} lacks the requested extension(s) "
                f"{', '.join(lacking)} (its extensions: {dict(entry.extensions) or 'none'}); refusing to sign a "
                f"certificate {cfg.generation.node_group} would not match. Clean it "
                f"(`{' '.join(clean_on_ca_command(cfg))}`) and re-run: the installer writes csr_attributes.yaml."
            )
        result = ctx.primary_ca.sign(cfg.certname, cfg.sign_timeout)
        if result.exit_status != 0:
            reason = ca.refusal_reason(result.stdout + result.stderr)
            if reason:
                raise CaRefusedError(f"[{cfg.primary_host}] step 'sign': {reason}\n{result.tail(5)}")
            result.check("sign", "the CA refused to sign")
        ctx.log("sign", f"signed {cfg.certname} with {len(entry.sans)} SANs ({ctx.primary_ca.sign_method})")
        return
    raise ProviderError(f"[{cfg.primary_host}] step 'sign': the certificate state did not settle after 3 attempts")


def verify_certificate(ctx: Context) -> None:
    cfg = ctx.cfg
    hostcert = ctx.agent.get("hostcert", "")
    if not file_exists(ctx.host, hostcert):
        script = ca.download_cert_script(
            f"https://{cfg.primary_certname}:8140{cfg.generation.certificate_path(cfg.certname)}",
            cfg.certname,
            ctx.agent.get("localcacert", ""),
            hostcert,
            ctx.agent.get("hostprivkey", ""),
        )
        ctx.host.run(script, timeout=cfg.sign_timeout).check("download the signed certificate")
    pem = ctx.host.get(hostcert)
    if not pem:
        raise ProviderError(f"[{cfg.host}] step 'verify certificate': no certificate at {hostcert}")
    issued = IssuedCert.from_pem(pem)
    entry = ca_entry(ctx)
    if entry is None or entry.state != "signed" or entry.fingerprint != issued.fingerprint:
        raise ProviderError(
            f"[{cfg.host}] step 'verify certificate': the host's certificate ({issued.fingerprint[:23]}"
            "...) is not the one the CA signed; clean it on both and re-run"
        )
    if issued.sans != ca.expected_sans(cfg.certname, cfg.dns_alt_names) and cfg.dns_alt_names:
        raise SanMismatchError(f"[{cfg.host}] the issued certificate carries {sorted(issued.sans)}")
    check_extensions(cfg, issued)
    ctx.issued = issued
    ctx.log("verify certificate", f"serial {issued.serial}, SANs {','.join(sorted(issued.sans)) or '-'}")


def check_extensions(cfg: MasterConfig, issued: IssuedCert) -> None:
    lacking = missing_extensions(issued.extensions, cfg.extension_requests)
    if lacking:
        group = cfg.availability_node_group or cfg.generation.node_group
        raise SanMismatchError(
            f"[{cfg.host}] the issued certificate lacks the requested extension(s) {', '.join(lacking)} "
            f"(it carries {dict(issued.extensions) or 'none'}): {group} would not match it"
        )
