"""sign_certificate's re-issue path: a revoked or re-SANed certificate is cleaned on the
CA the way the removal cleans it (Primary.clean: the CA's HTTP API from PE 2019.0, one
request per connection), never with `puppetserver ca clean`, whose DELETE waits 30 s on
Puppet Server 7+ (provider/master/certificate.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from provider.master import certificate, context
from provider.master.config import MasterConfig
from provider.pe import ca
from provider.pe.primary import Primary
from provider.ssh.session import SshSession
from tests.unit.test_master_config import valid


class RecordingCa:
    """The primary's CA as the re-issue uses it: what was cleaned, and how."""

    def __init__(self) -> None:
        self.cleaned: list[tuple[str, bool]] = []

    def clean(self, certname: str, signed: bool, timeout: float) -> None:
        self.cleaned.append((certname, signed))


class NoShell:
    """A session that must not be asked to run anything (the CA CLI included)."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"ran {args[0]!r} on the primary")


@pytest.mark.parametrize(("state", "sans", "signed"), [("revoked", None, False), ("signed", {"other"}, True)])
def test_a_certificate_to_reissue_is_cleaned_through_the_ca_api(
    monkeypatch: pytest.MonkeyPatch, state: str, sans: set[str] | None, signed: bool
) -> None:
    cfg = MasterConfig.from_props(valid(pe_version="2021.7.9"))
    wanted = ca.expected_sans(cfg.certname, cfg.dns_alt_names)
    exts = cfg.generation.extension_requests
    entries = [
        ca.CaEntry(cfg.certname, state, "AA:BB", frozenset(sans or wanted), exts),  # type: ignore[arg-type]
        ca.CaEntry(cfg.certname, "signed", "CC:DD", wanted, exts),
    ]
    steps: list[str] = []
    monkeypatch.setattr(certificate, "ca_entry", lambda _ctx: entries.pop(0))
    monkeypatch.setattr(certificate, "file_exists", lambda _host, _path: True)
    monkeypatch.setattr(certificate, "clean_host_identity", lambda _ctx: steps.append("host identity cleaned"))
    monkeypatch.setattr(certificate, "install_agent", lambda _ctx: steps.append("agent installed"))
    recording = RecordingCa()
    logged: list[str] = []
    ctx = context.Context(
        cfg,
        cast(SshSession, object()),
        cast(SshSession, NoShell()),
        lambda _step, line: logged.append(line),
        ca=cast(Primary, recording),
    )
    certificate.sign_certificate(ctx)
    assert recording.cleaned == [(cfg.certname, signed)]  # DELETE only for a revoked one
    assert steps == ["host identity cleaned", "agent installed"]
    assert any("cleaning it on the CA and requesting a new one" in line for line in logged), logged
    assert "already signed with the requested alt names and extensions: skipped" in logged[-1]
