"""Secrets stay secret and trust is never skipped - checked without the lab.

* Secret inputs: every key that carries key/token material is declared secret by its
  resource; through the SDK's provider server (Check, state as the engine keeps it) and
  under mocks (the program's registrations) the secret text is only ever in secret
  inputs - never in plain inputs, check failures, or the pickled `__provider`.
* Failure paths reachable without the lab - SSH to a closed port, a local SSH server that
  presents the wrong host key / refuses the login / echoes what it got, the classifier
  API against a closed port or a local HTTPS server that echoes the token, and every
  resource's create through the provider server against a closed port - never show a
  secret in an exception, in the provider's output or in a progress line.
* Static trust checks over the product code: no AutoAddPolicy/WarningPolicy, no
  verify=False, no curl -k, no check_hostname=False / CERT_NONE, no
  StrictHostKeyChecking=no; every requests call passes `verify=` a CA path. The checker
  is itself tested on bad snippets.
* Host key pinning (provider/ssh/): only the pinned key is accepted.
"""

from __future__ import annotations

import ast
import base64
import datetime
import http.server
import io
import ipaddress
import json
import re
import socket
import ssl
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dill
import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from provider import compile_master, compile_master_batch, file_sync, infra_refresh, pool_member
from provider.codesync import plan
from provider.core.command import RemoteCommandError
from provider.core.errors import (
    ClassifierError,
    HostKeyMismatchError,
    SshUnreachableError,
    user_message,
)
from provider.master import config as master_config
from provider.pe import classifier
from provider.ssh.session import SshSession, host_keys_for, pinned_policy
from provider.ssh.trust import SshTarget
from tests.harness.mocks import run_program
from tests.harness.provider_server import PROVIDER_KEY, Engine, ProviderError, ProviderServer, Secret, StateEntry

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "127.0.10.250"  # not a lab host; nothing listens there


def openssh_key() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )


SSH_KEY = openssh_key()
PRIMARY_KEY = openssh_key()
TOKEN = "0TOKEN-rbac-Zq81xVw3"
CLIENT_KEY = "-----BEGIN PRIVATE KEY-----\nCLIENT-KEY-BODY-7f3a9\n-----END PRIVATE KEY-----\n"


def fragments(secret: str) -> list[str]:
    """What must never show: the secret, and each line of it long enough to be telling
    (a key's base64 body lines would leak it as well)."""
    return [secret, *(line for line in secret.splitlines() if len(line) >= 12 and "-----" not in line)]


ALL_SECRETS = [f for s in (SSH_KEY, PRIMARY_KEY, TOKEN, CLIENT_KEY) for f in fragments(s)]


def leaks(text: str, secrets: list[str] = ALL_SECRETS) -> list[str]:
    return [s[:24] + "..." for s in secrets if s in text]


def flat(value: Any) -> str:
    """Every string inside a value, one per line (json.dumps would escape a key's newlines)."""
    if isinstance(value, dict):
        return "\n".join(f"{k}\n{flat(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return "\n".join(flat(v) for v in value)
    return str(value)


def pinned(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def host_pkey() -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(openssh_key()))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 1. which inputs are secret ---------------------------------------------------------
SECRET_NAME = re.compile(r"private_key|token|password|passphrase|client_key|secret")
RESOURCES: list[tuple[str, type, tuple[str, ...]]] = [
    ("PeCompileMaster", compile_master.PeCompileMasterArgs, master_config.SECRET_KEYS),
    ("CompileMasterBatch", compile_master_batch.CompileMasterBatchArgs, master_config.SECRET_KEYS),
    ("PoolMember", pool_member.PoolMemberArgs, pool_member.SECRET_KEYS),
    ("FileSync", file_sync.FileSyncArgs, plan.SECRET_KEYS),
    ("InfraRefresh", infra_refresh.InfraRefreshArgs, infra_refresh.SECRET_KEYS),
]


@pytest.mark.parametrize(("type_name", "args", "secret_keys"), RESOURCES, ids=[r[0] for r in RESOURCES])
def test_every_input_carrying_a_key_or_token_is_declared_secret(
    type_name: str, args: Any, secret_keys: tuple[str, ...]
) -> None:
    keys = set(args.__required_keys__) | set(args.__optional_keys__)
    carrying = {k for k in keys if SECRET_NAME.search(k)}
    assert carrying, f"{type_name}: no key/token inputs found - the name pattern is stale"
    assert carrying <= set(secret_keys), f"{type_name}: not declared secret: {sorted(carrying - set(secret_keys))}"
    assert not set(secret_keys) - keys, f"{type_name}: declared secret but not an input: {set(secret_keys) - keys}"


# --- 2. through the provider server: Check, state, __provider --------------------------
def master_inputs(**extra: Any) -> dict[str, Any]:
    return {
        "host": NOWHERE,
        "ssh_private_key": Secret(SSH_KEY),
        "ssh_host_key": pinned(host_pkey()),
        "certname": "compile01.example.com",
        "primary_host": NOWHERE,
        "primary_ssh_private_key": Secret(PRIMARY_KEY),
        "primary_ssh_host_key": pinned(host_pkey()),
        "primary_certname": "primary.example.com",
        "database_host": NOWHERE,  # PE 2019.7+: PE-PostgreSQL's host
        "database_ssh_private_key": Secret(PRIMARY_KEY),
        "database_ssh_host_key": pinned(host_pkey()),
        "pe_version": "2019.8",
        "classifier_url": f"https://{NOWHERE}:4433",
        "rbac_token": Secret(TOKEN),
        "classifier_client_cert": "-----BEGIN CERTIFICATE-----\nnot secret\n-----END CERTIFICATE-----\n",
        "classifier_client_key": Secret(CLIENT_KEY),
        **extra,
    }


def batch_inputs(**extra: Any) -> dict[str, Any]:
    shared = {k: v for k, v in master_inputs().items() if k not in compile_master_batch.MASTER_KEYS}
    entry = {"certname": "compile01.example.com", "host": NOWHERE, "ssh_host_key": pinned(host_pkey())}
    return {**shared, "masters": [entry], **extra}


def member_inputs(**extra: Any) -> dict[str, Any]:
    return {
        "lb_host": NOWHERE,
        "lb_ssh_private_key": Secret(SSH_KEY),
        "lb_ssh_host_key": pinned(host_pkey()),
        "server_name": "compile01",
        "address": "10.0.0.11",
        **extra,
    }


def sync_inputs(**extra: Any) -> dict[str, Any]:
    return {
        "method": "rsync",
        "host": NOWHERE,
        "ssh_private_key": Secret(SSH_KEY),
        "ssh_host_key": pinned(host_pkey()),
        "primary_host": NOWHERE,
        "primary_ssh_private_key": Secret(PRIMARY_KEY),
        "primary_ssh_host_key": pinned(host_pkey()),
        **extra,
    }


def refresh_inputs(**extra: Any) -> dict[str, Any]:
    return {
        "masters": ["compile01.example.com"],
        "puppetdb_host": NOWHERE,
        "puppetdb_ssh_private_key": Secret(SSH_KEY),
        "puppetdb_ssh_host_key": pinned(host_pkey()),
        "console_host": NOWHERE,
        "console_ssh_private_key": Secret(PRIMARY_KEY),
        "console_ssh_host_key": pinned(host_pkey()),
        **extra,
    }


class Case(NamedTuple):
    type_name: str
    provider: Callable[[], Any]
    build: Callable[..., dict[str, Any]]
    bad_key: str  # a host input to make the check fail on


CASES = [
    Case("PeCompileMaster", compile_master.PeCompileMasterProvider, master_inputs, "host"),
    Case("CompileMasterBatch", compile_master_batch.CompileMasterBatchProvider, batch_inputs, "primary_host"),
    Case("PoolMember", pool_member.PoolMemberProvider, member_inputs, "lb_host"),
    Case("FileSync", file_sync.FileSyncProvider, sync_inputs, "host"),
    Case("InfraRefresh", infra_refresh.InfraRefreshProvider, refresh_inputs, "puppetdb_host"),
]


@pytest.fixture(params=CASES, ids=[c.type_name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    """Each resource type with its inputs (every secret wrapped as the engine sends it)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def provider_blob_text(blob: str) -> str:
    """The `__provider` value, decoded: base64 of a dill pickle (by reference to provider/...)."""
    raw = base64.b64decode(blob)
    provider = dill.loads(raw)  # our own test data
    return raw.decode("latin-1") + repr(vars(provider))


def test_secrets_stay_in_secret_inputs_through_check_and_state(server: ProviderServer, case: Case) -> None:
    type_name, provider, build, bad_key = case
    inputs = build(connect_timeout=-1)  # one failure: PoolMember's check then makes no SSH attempt
    secret_keys = {k for k, v in inputs.items() if isinstance(v, Secret)}
    engine = Engine(server, provider(), "r", type_name)
    checked = engine.check(inputs)
    assert [k for k, _ in checked.failures] in (["connect_timeout"], ["masters[0].connect_timeout"])
    # Check hands the inputs back; no secret is copied under another key.
    plain = {k: v for k, v in checked.inputs.items() if k not in secret_keys and k != PROVIDER_KEY}
    assert not leaks(flat(plain)), type_name
    assert checked.inputs[next(iter(secret_keys))] in ALL_SECRETS  # (the secret did reach the provider)
    # The state as the engine writes it (keys whose input was secret are ciphertext).
    _, secret = engine._plain(inputs)
    state = StateEntry("id", checked.inputs, {**checked.inputs, "status": "x"}, secret)
    assert not leaks(flat(state.serialized_state()))
    # The pickled provider holds nothing but its class.
    assert not leaks(provider_blob_text(engine.provider_blob))
    # Failure reasons never quote a secret (a bad host and, for PoolMember, an unusable key).
    failures = engine.check(build(**{bad_key: "bad host;"})).failures
    assert failures and not leaks(repr(failures))
    if type_name == "PoolMember":
        broken = Secret(f"not a key {TOKEN}")
        failures = engine.check(build(lb_ssh_private_key=broken)).failures
        assert "lb_ssh_private_key" in dict(failures) and not leaks(repr(failures)), failures
    assert not leaks(server.text())


# --- 3. the program under mocks --------------------------------------------------------
def program_config(tmp_path: Path, variant: str) -> dict[str, str]:
    """A stack's config with every host key pinned; the secrets as `variant` provides them."""
    key = pinned(host_pkey())
    config: dict[str, Any] = {
        "pe:version": "2019.8",
        **{
            f"pe:{section}": {"host": f"{section.lower()}.example.com", "hostKey": key}
            for section in ("primary", "console", "puppetdb", "loadBalancer")
        },
        "pe:fileSync": {"method": "rsync"},
        "pe:compileMasters": [
            {"certname": f"compile0{i}.example.com", "address": f"10.0.0.1{i}", "hostKey": key} for i in (1, 2)
        ],
    }
    if variant == "secret config":  # `pulumi config set --secret`
        config["pe:sshPrivateKey"] = SSH_KEY
        config["pe:rbacToken"] = TOKEN
    elif variant == "files":  # pe:...File keys read on the machine running Pulumi
        (tmp_path / "key").write_text(SSH_KEY)
        (tmp_path / "token").write_text(TOKEN + "\n")
        config["pe:sshPrivateKeyFile"] = str(tmp_path / "key")
        config["pe:rbacTokenFile"] = str(tmp_path / "token")
    else:  # PE 3.7: a whitelisted client certificate instead of a token
        config["pe:version"] = "3.7"
        config["pe:sshPrivateKey"] = SSH_KEY
        config["pe:classifierClientCert"] = "-----BEGIN CERTIFICATE-----\nnot secret\n-----END CERTIFICATE-----\n"
        (tmp_path / "client.key").write_text(CLIENT_KEY)
        config["pe:classifierClientKeyFile"] = str(tmp_path / "client.key")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


@pytest.mark.parametrize("variant", ["secret config", "files", "client certificate"])
def test_the_program_passes_secrets_only_as_secret_inputs(tmp_path: Path, variant: str) -> None:
    from components.program import main

    mocks = run_program(main, stack="faults", config=program_config(tmp_path, variant))
    used = {TOKEN: False, SSH_KEY: False, CLIENT_KEY: False}
    custom = [r for r in mocks.resources.values() if r.custom]
    assert len(custom) == 3 + 3 * 2  # batch, refresh, pool admission, and code/master/pool per master
    for resource in mocks.resources.values():
        for key, value in resource.inputs.items():
            text = flat(value)
            if key in resource.secret_inputs:
                used.update({s: True for s in used if s in text})
            else:
                assert not leaks(text), f"{resource.name}.{key} is a plain input holding a secret"
        if resource.custom:
            assert PROVIDER_KEY in resource.secret_inputs
            blob = resource.inputs[PROVIDER_KEY]["value"]  # recorded as the secret envelope
            assert not leaks(provider_blob_text(blob)), resource.name
    assert used[SSH_KEY] and used[TOKEN] == (variant != "client certificate")
    assert used[CLIENT_KEY] == (variant == "client certificate")


# --- 4. failure paths: exceptions, provider output, progress lines ----------------------
def test_ssh_to_a_closed_port_fails_without_the_key_in_the_error() -> None:
    port = closed_port()
    target = SshTarget("127.0.0.1", port, "root", SSH_KEY, pinned(host_pkey()))
    with pytest.raises(SshUnreachableError) as failed:
        SshSession(target, connect_deadline=1.0, secrets=[SSH_KEY, TOKEN]).connect()
    assert f"127.0.0.1:{port}" in str(failed.value) and "cannot open SSH" in str(failed.value)
    assert not leaks(str(failed.value)) and not leaks(repr(target))


class _SshServer(paramiko.ServerInterface):
    def __init__(self, accept: paramiko.PKey | None, said: list[bytes]):
        self.accept = accept
        self.said = said

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = self.accept is not None and key.asbytes() == self.accept.asbytes()
        return paramiko.common.AUTH_SUCCESSFUL if ok else paramiko.common.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.common.OPEN_SUCCEEDED if kind == "session" else paramiko.common.OPEN_FAILED_UNKNOWN_CHANNEL_TYPE

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.said.append(command)

        def answer() -> None:  # a host that prints secrets back: the token, and what it was asked to run
            while channel.recv(1024):  # like a command reading its stdin: answer after the client's EOF
                pass
            channel.sendall(f"token is {TOKEN}\n".encode())
            channel.sendall_stderr(b"you ran: " + command + b"\n")
            channel.send_exit_status(3)
            channel.close()

        threading.Thread(target=answer, daemon=True).start()
        return True


class LocalSshServer:
    """A paramiko SSH server on 127.0.0.1 (not the lab): `host_key` is what it presents;
    it lets in only `accept` and answers every command by echoing secrets."""

    def __init__(self, host_key: paramiko.PKey, accept: paramiko.PKey | None):
        self.host_key = host_key
        self.accept = accept
        self.said: list[bytes] = []
        self.transports: list[paramiko.Transport] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=_SshServer(self.accept, self.said))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def __enter__(self) -> LocalSshServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()
        for transport in self.transports:
            transport.close()


@pytest.fixture
def client_key() -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(SSH_KEY))


def test_a_host_presenting_another_key_is_refused_naming_host_fingerprint_and_what_to_do(
    client_key: paramiko.PKey,
) -> None:
    real, impostor = host_pkey(), host_pkey()
    with LocalSshServer(impostor, accept=client_key) as server:
        target = SshTarget("127.0.0.1", server.port, "root", SSH_KEY, pinned(real))
        with pytest.raises(HostKeyMismatchError) as failed:
            SshSession(target, connect_deadline=5.0, secrets=[SSH_KEY]).connect()
        message = user_message(failed.value)  # what the provider boundary sends the engine
        assert f"127.0.0.1:{server.port}" in message and impostor.fingerprint in message
        assert "put its new key in the stack config" in message
        assert not leaks(message) and server.said == []  # never logged in, never ran anything


def test_a_refused_login_names_host_and_user_but_not_the_key(client_key: paramiko.PKey) -> None:
    host_key = host_pkey()
    with LocalSshServer(host_key, accept=None) as server:
        target = SshTarget("127.0.0.1", server.port, "deploy", SSH_KEY, pinned(host_key))
        with pytest.raises(SshUnreachableError) as failed:
            SshSession(target, connect_deadline=5.0, secrets=[SSH_KEY]).connect()
        message = str(failed.value)
        assert "login as deploy was refused" in message and f"127.0.0.1:{server.port}" in message
        assert not leaks(message)


def test_command_lines_and_output_are_masked_in_results_and_errors(client_key: paramiko.PKey) -> None:
    host_key = host_pkey()
    with LocalSshServer(host_key, accept=client_key) as server:
        target = SshTarget("127.0.0.1", server.port, "root", SSH_KEY, pinned(host_key))
        with SshSession(target, connect_deadline=5.0, secrets=[SSH_KEY, TOKEN]) as session:
            result = session.run(["puppet-access", "login", "--token", TOKEN], timeout=20)
        assert any(TOKEN.encode() in said for said in server.said)  # the secret really went and came back
        assert result.exit_status == 3
        for text in (result.command, result.stdout, result.stderr):
            assert TOKEN not in text and "********" in text, text
        with pytest.raises(RemoteCommandError) as failed:
            result.check("log in", "check the token")
        assert "step 'log in' failed" in str(failed.value) and not leaks(str(failed.value))


def make_ca(tmp_path: Path, name: str = "server") -> tuple[str, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, cert file, key file)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test PE CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "console")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_cert.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file


class EchoConsole:
    """An HTTPS 'console' on 127.0.0.1 that answers /<status>/... with that status and a
    body quoting the X-Authentication header it received (a careless server)."""

    def __init__(self, cert_file: Path, key_file: Path):
        self.tokens: list[str] = []
        seen = self.tokens

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append(self.headers.get("X-Authentication", ""))
                status = int(self.path.strip("/").split("/")[0])
                body = json.dumps({"kind": "error", "msg": f"token {seen[-1]} is not valid"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier, "time", types.SimpleNamespace(sleep=lambda _s: None))


def classifier_error(base: str, ca_pem: str) -> str:
    auth = classifier.ClassifierAuth(token=TOKEN)
    with pytest.raises(ClassifierError) as failed, classifier.Classifier(base, ca_pem, auth, timeout=5).opened() as api:
        api.group_by_name("PE Master")
    assert TOKEN not in repr(auth)
    return str(failed.value)


@pytest.mark.usefixtures("no_retry_wait")
def test_classifier_errors_never_carry_the_token(tmp_path: Path) -> None:
    ca_pem, cert_file, key_file = make_ca(tmp_path)
    console = EchoConsole(cert_file, key_file)
    try:
        for status in (401, 403, 404, 500, 503):
            message = classifier_error(f"https://127.0.0.1:{console.port}/{status}", ca_pem)
            assert console.tokens[-1] == TOKEN  # the server got it, and quoted it in its answer
            assert f"HTTP {status}" in message and not leaks(message), message
        port = closed_port()
        message = classifier_error(f"https://127.0.0.1:{port}", ca_pem)
        assert f"127.0.0.1:{port}" in message and not leaks(message)
    finally:
        console.close()


@pytest.mark.usefixtures("no_retry_wait")
def test_the_classifier_refuses_a_server_not_certified_by_the_pe_ca(tmp_path: Path) -> None:
    _, cert_file, key_file = make_ca(tmp_path, "impostor")
    other_ca, _, _ = make_ca(tmp_path, "ours")  # the PE CA we trust did not sign the server's certificate
    console = EchoConsole(cert_file, key_file)
    try:
        message = classifier_error(f"https://127.0.0.1:{console.port}/200", other_ca)
        assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message, message
        assert console.tokens == []  # TLS failed first: the token was never sent
    finally:
        console.close()


def test_the_classifier_masks_the_client_key_too() -> None:
    api = classifier.Classifier("https://c:4433", "", classifier.ClassifierAuth(client_cert="c", client_key=CLIENT_KEY))
    assert api.auth.mask(f"bad key {CLIENT_KEY} sent") == "bad key ******** sent"


def test_creates_that_cannot_connect_fail_without_secrets_in_errors_or_progress(
    server: ProviderServer, case: Case
) -> None:
    type_name, provider, build, _ = case
    port = closed_port()  # 127.0.0.1: not the lab, and nothing listens
    inputs = build(connect_timeout=1)
    for prefix in ("", "primary_", "database_", "lb_", "puppetdb_", "console_"):
        if f"{prefix}host" in inputs:
            inputs.update({f"{prefix}host": "127.0.0.1", f"{prefix}ssh_port": port})
    for entry in inputs.get("masters", []):
        if isinstance(entry, dict):
            entry.update(host="127.0.0.1", ssh_port=port)
    name = f"{type_name}-create"
    with pytest.raises(ProviderError) as failed:
        Engine(server, provider(), name, type_name).up(inputs, timeout=60)
    details, output = failed.value.details, server.text()
    assert failed.value.method == "Create" and "cannot open SSH" in details, details
    assert f"127.0.0.1:{port}" in details
    assert not leaks(details), details
    assert not leaks(output), output  # progress lines and anything else the provider printed


# --- 5. static trust checks over the product code -------------------------------------
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "request"}
TRUST_NAMES = {"AutoAddPolicy", "WarningPolicy", "CERT_NONE", "_create_unverified_context"}
BAD_TEXT = [
    re.compile(r"StrictHostKeyChecking\s*=?\s*(no|off|accept-new)\b", re.IGNORECASE),
    re.compile(r"UserKnownHostsFile\s*=?\s*/dev/null"),
    re.compile(r"--insecure\b|--no-check-certificate\b|--no-verify\b"),
    re.compile(r"\bcurl\b[^|;&\n]*\s-[A-Za-z]*k[A-Za-z]*(\s|$)"),
    re.compile(r"PYTHONHTTPSVERIFY\s*=\s*0|GIT_SSL_NO_VERIFY"),
]


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def trust_problems(source: str, names_only: bool = False) -> list[str]:
    """Every place `source` skips or weakens TLS or SSH host verification."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    out: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name) and node.id in TRUST_NAMES:
            out.append(f"{line}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in TRUST_NAMES:
            out.append(f"{line}: {node.attr}")
        if names_only:
            continue
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in ("verify", "check_hostname") and isinstance(kw.value, ast.Constant) and not kw.value.value:
                    out.append(f"{line}: {kw.arg}={kw.value.value!r}")
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if (
                    isinstance(t, ast.Attribute)
                    and t.attr in ("verify", "check_hostname")
                    and isinstance(node.value, ast.Constant)
                    and not node.value.value
                ):
                    out.append(f"{line}: .{t.attr} = {node.value.value!r}")
        if isinstance(node, ast.List | ast.Tuple) and node.elts:
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if words and words[0] == "curl" and any(re.fullmatch(r"-[A-Za-z]*k[A-Za-z]*", w) for w in words):
                out.append(f"{line}: curl -k")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out += [f"{line}: {p.pattern}" for p in BAD_TEXT if p.search(node.value)]
    return out


def unverified_requests(source: str) -> tuple[int, list[str]]:
    """(requests calls seen, those without `verify=` a CA path): calls on the `requests`
    module or on what a `requests.Session()` was assigned to (e.g. `self.session`)."""
    tree = ast.parse(source)
    receivers = {"requests"}
    for node in ast.walk(tree):
        sessions = ("requests.Session", "requests.session", "Session")
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) in sessions
        ):
            receivers |= {ast.unparse(t) for t in node.targets}
    seen, out = 0, []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in HTTP_METHODS or ast.unparse(node.func.value) not in receivers:
            continue
        seen += 1
        verify = next((kw.value for kw in node.keywords if kw.arg == "verify"), None)
        if verify is None or isinstance(verify, ast.Constant):  # absent, False, True (system CAs), None
            out.append(f"{node.lineno}: {ast.unparse(node)[:80]}")
    return seen, out


def shell_problems(text: str) -> list[str]:
    return [
        f"{n}: {p.pattern}"
        for n, line in enumerate(text.splitlines(), 1)
        if not line.lstrip().startswith("#")
        for p in BAD_TEXT
        if p.search(line)
    ]


def product_python() -> list[Path]:
    files = [ROOT / "__main__.py", *(ROOT / "provider").rglob("*.py"), *(ROOT / "components").rglob("*.py")]
    files += [p for p in (ROOT / "scripts").rglob("*") if p.suffix == ".py"]
    return sorted(files)


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ("c.set_missing_host_key_policy(paramiko.AutoAddPolicy())", "AutoAddPolicy"),
        ("c.set_missing_host_key_policy(WarningPolicy())", "WarningPolicy"),
        ("requests.get(url, verify=False)", "verify=False"),
        ("s.request('GET', url, verify=None)", "verify=None"),
        ("ctx.check_hostname = False", "check_hostname"),
        ("ctx.verify_mode = ssl.CERT_NONE", "CERT_NONE"),
        ("ssl._create_unverified_context()", "_create_unverified_context"),
        ("session.verify = False", ".verify = False"),
        ("run(['curl', '-sSk', url])", "curl -k"),
        ("run(['curl', '-k', url])", "curl -k"),
        ("run('curl -sS -k https://x')", "curl"),
        ("run(['curl', '--insecure', url])", "insecure"),
        ("run('ssh -o StrictHostKeyChecking=no h')", "StrictHostKeyChecking"),
        ("run(f'ssh -o UserKnownHostsFile=/dev/null {h}')", "UserKnownHostsFile"),
        ("run('git clone x', env={'GIT_SSL_NO_VERIFY': '1'})", "GIT_SSL_NO_VERIFY"),
        ('"""We never use AutoAddPolicy or --insecure."""\nx = 1', None),
        ("requests.get(url, verify=ca_path)", None),
        ("run(['timeout', '-k', '10', 'x'])", None),
        ("run(['curl', '-sSf', '--cacert', ca, url])", None),
        ("run('ssh -o StrictHostKeyChecking=yes h')", None),
    ],
)
def test_the_trust_checker_finds_what_it_must(snippet: str, problem: str | None) -> None:
    found = trust_problems(snippet)
    if problem is None:
        assert found == [], found
    else:
        assert any(problem in f for f in found), found


def test_the_requests_checker_finds_calls_without_a_ca() -> None:
    source = (
        "requests.get(u)\n"
        "requests.post(u, verify=True)\n"
        "self.session = requests.Session()\n"
        "self.session.request('GET', u, verify=os.path.join(d, 'ca.pem'))\n"
        "props.get('x'); ssh_session.get('/etc/x')\n"
        "http = requests.Session(); http.put(u, verify=False)\n"
    )
    seen, bad = unverified_requests(source)
    assert seen == 4 and [b.split(":")[0] for b in bad] == ["1", "2", "6"]
    assert shell_problems("# curl -k is never used\ncurl -sSf --cacert ca.pem https://x\n") == []
    assert shell_problems("curl -sSk https://x\n") and shell_problems("ssh -o StrictHostKeyChecking=no h\n")


def test_product_code_never_skips_tls_or_host_key_verification() -> None:
    files = product_python()
    assert ROOT / "provider" / "ssh" / "session.py" in files and ROOT / "provider" / "pe" / "classifier.py" in files
    problems = {str(p.relative_to(ROOT)): found for p in files if (found := trust_problems(p.read_text()))}
    scripts = [p for p in (ROOT / "scripts").rglob("*") if p.is_file() and p.suffix != ".py"]
    assert scripts, "scripts/ has no shell scripts any more: update this test"
    problems |= {str(p.relative_to(ROOT)): found for p in scripts if (found := shell_problems(p.read_text()))}
    assert not problems, problems


def test_the_lab_never_accepts_unknown_host_keys_either() -> None:
    files = sorted((ROOT / "lab").rglob("*.py"))
    assert ROOT / "lab" / "client.py" in files
    problems = {}
    for path in files:
        try:
            found = trust_problems(path.read_text(), names_only=True)
        except SyntaxError:  # not Python 3 (e.g. run inside a host): look at the text
            found = [line for line in path.read_text().splitlines() if "AutoAddPolicy" in line]
        if found:
            problems[str(path.relative_to(ROOT))] = found
    assert not problems, problems


def test_every_requests_call_in_product_code_verifies_against_a_ca_file() -> None:
    total, problems = 0, {}
    for path in product_python():
        seen, bad = unverified_requests(path.read_text())
        total += seen
        if bad:
            problems[str(path.relative_to(ROOT))] = bad
    assert total >= 1, "no requests call found: the checker no longer sees the classifier client"
    assert not problems, problems
    pe_source = (ROOT / "provider" / "pe" / "classifier.py").read_text()
    assert "trust_env = False" in pe_source  # no CA bundle or proxy from the environment


# --- 6. host key pinning ---------------------------------------------------------------
def test_only_the_pinned_key_is_accepted_and_a_mismatch_says_what_to_do() -> None:
    real, other = host_pkey(), host_pkey()
    rsa = paramiko.RSAKey.generate(1024)
    target = SshTarget("compile01.example.com", 2222, "root", "", pinned(real))
    policy = pinned_policy(target, host_keys_for(target))
    policy.missing_host_key(paramiko.SSHClient(), "[compile01.example.com]:2222", real)  # the control
    for presented in (other, rsa):
        with pytest.raises(HostKeyMismatchError) as failed:
            policy.missing_host_key(paramiko.SSHClient(), "[compile01.example.com]:2222", presented)
        message = user_message(failed.value)  # what the provider boundary sends the engine
        assert "compile01.example.com:2222" in message and presented.fingerprint in message
        assert "a different machine may be answering" in message and "put its new key in the stack config" in message


def test_a_mismatch_also_names_the_pinned_fingerprint() -> None:
    real, other = host_pkey(), host_pkey()
    target = SshTarget("compile01.example.com", 22, "root", "", pinned(real))
    with pytest.raises(HostKeyMismatchError) as failed:
        pinned_policy(target, host_keys_for(target)).missing_host_key(paramiko.SSHClient(), "h", other)
    assert real.fingerprint in str(failed.value)


@pytest.mark.parametrize(
    "known_hosts",
    [
        "",
        "# compile01.example.com ssh-ed25519 AAAA\n",
        "other.example.com {key}\n",
        "compile01.example.com.evil.test {key}\n",
        "*.example.com {key}\n",  # patterns are not trusted
        "[compile01.example.com]:2222 {key}\n",  # another port
        "|1|c2FsdA==|aGFzaA== {key}\n",  # hashed entries are not read: refused, not guessed
        "@revoked compile01.example.com {key}\n",
        "@cert-authority compile01.example.com {key}\n",
    ],
)
def test_no_matching_known_hosts_entry_means_no_connection(known_hosts: str) -> None:
    key = pinned(host_pkey())
    target = SshTarget("compile01.example.com", 22, "root", SSH_KEY, "", known_hosts.format(key=key))
    assert host_keys_for(target) == []
    with pytest.raises(HostKeyMismatchError, match="no pinned host key and no known_hosts entry"):
        SshSession(target, connect_deadline=1.0).connect()  # refused before any network traffic
    matching = SshTarget("compile01.example.com", 22, "root", SSH_KEY, "", f"compile01.example.com {key}\n")
    assert [pinned(k) for k in host_keys_for(matching)] == [key]  # the control
