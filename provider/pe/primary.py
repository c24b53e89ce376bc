"""The primary (the PE CA) as the masters' steps reach it over SSH: its SSL settings, the
PE CA certificate, one certname's entry on the CA, signing and cleaning.

One `Primary` per provider call, shared by every thread of a CompileMasterBatch, so the
settings and the CA certificate are read once per call, not once per master and step.
The SSL settings (paths, not trust) are also remembered for the life of the provider
process - one `pulumi up` - keyed by the primary's SSH address: each read is a Ruby
start-up (`puppet config print`) on the primary that every master's steps share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from provider.core.command import CommandResult
from provider.core.errors import ProviderError
from provider.pe import ca, curl
from provider.pe.generation import Generation
from provider.ssh.session import SshSession

SSL_SETTINGS = ("hostcert", "hostprivkey", "localcacert")
# Reads of the CA are retried: Puppet Server's listing fails (HTTP 500,
# FileNotFoundException) when a request it is reading is signed meanwhile - which happens
# whenever masters are signed in parallel.
CA_LIST_ATTEMPTS = 5

_ssl_memo: dict[tuple[str, int, str], dict[str, str]] = {}
_crl_memo: dict[tuple[str, int, str, str], str] = {}
_ssl_memo_lock = threading.Lock()


def parse_config_print(text: str) -> dict[str, str]:
    """`puppet config print a b c` prints 'a = value' lines when given several names."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            out[key.strip()] = value.strip()
    return out


class Primary:
    def __init__(self, session: SshSession, generation: Generation, certname: str):
        self.session = session
        self.generation = generation
        self.cli = generation.ca_cli
        self.certname = certname
        self._lock = threading.Lock()
        self._ca_pem = ""

    def ssl(self) -> dict[str, str]:
        """The primary's hostcert, hostprivkey and localcacert paths."""
        target = self.session.target
        key = (target.host, target.port, target.user)
        with _ssl_memo_lock:
            if key in _ssl_memo:
                return _ssl_memo[key]
            result = self.session.run(
                [self.generation.puppet_bin, "config", "print", *SSL_SETTINGS, "--section", "agent"], timeout=120
            )
            result.check("read the primary's SSL settings")
            settings = parse_config_print(result.stdout)
            missing = [s for s in SSL_SETTINGS if not settings.get(s)]
            if missing:
                raise ProviderError(f"[{target.label}] `puppet config print` did not show {', '.join(missing)}")
            _ssl_memo[key] = settings
            return settings

    def ca_pem(self) -> str:
        """The PE CA certificate, read over the pinned SSH channel."""
        with self._lock:
            if self._ca_pem:
                return self._ca_pem
        path = self.ssl()["localcacert"]
        pem = self.session.get(path)
        if not pem or b"BEGIN CERTIFICATE" not in pem:
            raise ProviderError(f"[{self.session.target.label}] no CA certificate at {path}")
        with self._lock:
            self._ca_pem = pem.decode()
            return self._ca_pem

    def api(self) -> ca.ApiClient:
        ssl = self.ssl()
        return ca.ApiClient(self.certname, ssl["hostcert"], ssl["hostprivkey"], ssl["localcacert"])

    def entry(self, certname: str, timeout: float, log: Callable[[str, str], None]) -> ca.CaEntry | None:
        """`certname`'s request, certificate or revoked certificate on the CA, or None (a
        read, so retried within `timeout`). One name only: the cost does not grow with the
        number of agents the CA has signed."""
        deadline = time.monotonic() + timeout
        legacy = self.cli == "puppet-cert"
        command = (
            ca.list_command(self.cli, self.generation.ca_bin, certname)
            if legacy
            else ca.api_status_command(self.api(), certname)
        )
        for attempt in range(1, CA_LIST_ATTEMPTS + 1):
            result = self.session.run(command, timeout=max(30.0, deadline - time.monotonic()))
            if legacy and ca.listed_nowhere(result.stdout + result.stderr, certname):
                return None
            if not legacy:
                if curl.http_status(result) == 404:  # "Invalid certificate subject": nothing for it
                    return None
                result = curl.with_http_status(result)
            if result.exit_status == 0 or attempt == CA_LIST_ATTEMPTS or time.monotonic() > deadline:
                break
            log("sign", f"reading the CA failed (exit {result.exit_status}, attempt {attempt}); retrying")
            time.sleep(attempt)
        result.check("read the CA", "is the CA service running on the primary?")
        if legacy:
            return ca.parse_list(self.cli, result.stdout).get(certname)
        try:
            return ca.parse_status_json(result.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProviderError(
                f"[{self.session.target.label}] the CA's certificate_status answer is not what Puppet Server "
                f"sends ({type(exc).__name__}: {exc})"
            ) from None

    def sign(self, certname: str, timeout: float) -> CommandResult:
        """Sign a pending CSR (the caller has checked it is ours, with our SANs)."""
        if self.cli == "puppet-cert":
            return self.session.run(ca.sign_command(self.cli, self.generation.ca_bin, certname), timeout=timeout)
        argv, body = ca.api_sign_command(self.api(), certname)
        return curl.with_http_status(self.session.run(argv, timeout=timeout, stdin=body))

    def clean(self, certname: str, signed: bool, timeout: float) -> None:
        """Revoke (if signed) and remove a certificate or request on the CA: the CA's HTTP
        API where PE signs through it (puppetserver-ca generations), else `puppet cert clean`."""
        if self.cli == "puppet-cert":
            argv = ca.clean_command(self.cli, self.generation.ca_bin, certname)
            self.session.run(argv, timeout=timeout).check("revoke and clean on the CA")
            return
        for argv, body in ca.api_clean_commands(self.api(), certname, signed):
            result = curl.with_http_status(self.session.run(argv, timeout=timeout, stdin=body))
            result.check("revoke and clean on the CA")

    def cacrl(self) -> str:
        """The CA's CRL file (`cacrl`: [master] up to Puppet 5, [server] from 6), remembered
        for the provider process like the SSL settings."""
        target = self.session.target
        key = (target.host, target.port, target.user, "cacrl")
        with _ssl_memo_lock:
            if key in _crl_memo:
                return _crl_memo[key]
        printed = self.session.run(
            [self.generation.puppet_bin, "config", "print", "cacrl", "--section", self.generation.crl_section],
            timeout=120,
        )
        path = printed.check("locate the CRL").stdout.strip()
        if not path.startswith("/"):
            raise ProviderError(f"[{target.label}] `puppet config print cacrl` printed {path!r}")
        with _ssl_memo_lock:
            _crl_memo[key] = path
        return path

    @property
    def sign_method(self) -> str:
        return "puppet cert --allow-dns-alt-names sign" if self.cli == "puppet-cert" else "the CA's HTTP API"
