"""FileSync's pure side: what it writes on hosts, how it compares code, what check refuses;
the hiera.yaml scripts run for real by sh against stand-in `puppet`s, and FileSync's
hiera.yaml steps against scripted hosts (which command on which host, copy only if needed)."""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from provider import file_sync
from provider.codesync import hiera, plan, remote
from provider.core.command import CommandResult
from provider.core.errors import ProviderError
from provider.ssh.session import SshSession
from provider.ssh.trust import SshTarget

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvL2tzZOBSbRBlc+ubhaqz4zYl6XYp5oIcGZfQ1f2p5"


def props(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "resource_name": "code-compile01",
        "method": "rsync",
        "host": "compile01.example.com",
        "ssh_private_key": KEY,
        "ssh_host_key": HOST_KEY,
        "primary_host": "primary.example.com",
        "primary_ssh_private_key": KEY,
        "primary_ssh_host_key": HOST_KEY,
        "excludes": ["*.swp", "production/data/secret*"],
    }
    base.update(overrides)
    return base


def test_rsync_script_pulls_with_the_restricted_key_and_pinned_host_key() -> None:
    cfg = plan.SyncConfig.from_props(props())
    script = plan.sync_script(cfg)
    command = plan.sync_command(cfg)
    assert command[:3] == ["rsync", "-a", "--delete"]
    assert "--exclude=*.swp" in command and "--exclude=production/data/secret*" in command
    ssh = command[command.index("-e") + 1]
    assert "StrictHostKeyChecking=yes" in ssh and "UserKnownHostsFile=/etc/puppetlabs/pe-file-sync/known_hosts" in ssh
    assert command[-2:] == ["root@primary.example.com:./", "/etc/puppetlabs/code/environments/"]
    # timeout(1), or Perl on hosts without it (RHEL 5, SLES 11): provider.ssh.deadline.
    bounded = f"timeout -k 10 {plan.JOB_TIMEOUT} /bin/sh -c {shlex.quote(shlex.join(command))}"
    assert bounded in script and "else exec perl -e" in script and ") || rc=$?" in script
    assert "exec 9>/var/lock/pe-file-sync.lock" in script
    assert "flock -w 600 9" in script and script.startswith("#!/bin/sh\n")
    line = plan.authorized_key_line(cfg, "ssh-ed25519 AAAAkey pe-file-sync:compile01")
    assert line == (
        'restrict,command="/usr/bin/rrsync -ro /etc/puppetlabs/code/environments" ssh-ed25519 AAAAkey '
        "pe-file-sync:compile01.example.com"
    )
    assert plan.cron_entry(cfg).endswith("*/5 * * * * root /etc/puppetlabs/pe-file-sync/sync >/dev/null 2>&1\n")


def test_authorized_keys_edit_keeps_other_lines_and_replaces_ours() -> None:
    marker = "pe-file-sync:compile01.example.com"
    text = "ssh-ed25519 AAAAadmin admin@laptop\nrestrict ssh-ed25519 AAAAold pe-file-sync:compile01.example.com\n"
    added = plan.authorized_keys_with(text, marker, "restrict ssh-ed25519 AAAAnew " + marker)
    assert added == "ssh-ed25519 AAAAadmin admin@laptop\nrestrict ssh-ed25519 AAAAnew " + marker + "\n"
    other = "restrict ssh-ed25519 AAAAx pe-file-sync:compile011.example.com"
    assert plan.authorized_keys_with(added + other + "\n", marker, None) == (
        "ssh-ed25519 AAAAadmin admin@laptop\n" + other + "\n"
    )


def test_r10k_yaml_and_fstab_entries() -> None:
    cfg = plan.SyncConfig.from_props(props(method="r10k", r10k_remote="git@git.example.com:puppet/control.git"))
    assert plan.sync_command(cfg)[:3] == ["r10k", "deploy", "environment"]
    text = plan.r10k_yaml(cfg)
    assert "remote: git@git.example.com:puppet/control.git" in text
    assert "basedir: /etc/puppetlabs/code/environments" in text
    nfs = plan.SyncConfig.from_props(props(method="nfs", nfs_options="ro,hard"))
    fstab = "UUID=abc / ext4 defaults 0 1\n"
    with_entry = plan.fstab_with(fstab, nfs, True)
    assert with_entry.splitlines()[-1] == (
        "primary.example.com:/etc/puppetlabs/code/environments /etc/puppetlabs/code/environments nfs ro,hard 0 0"
    )
    assert plan.fstab_with(with_entry, nfs, True) == with_entry  # idempotent
    assert plan.fstab_with(with_entry, nfs, False) == fstab


def test_listing_parse_ignores_metadata_and_excludes_like_rsync() -> None:
    sha = "a" * 64
    text = "\n".join(
        [
            f"{sha}  ./production/manifests/site.pp",
            f"{sha}  ./production/.r10k-deploy.json",
            f"{sha}  ./production/modules/x/.git/HEAD",
            f"{sha}  ./production/editor.swp",
            f"{sha}  ./production/data/secrets.yaml",
            f"{sha}  ./staging/data/secrets.yaml",
            f"\\{'b' * 64}  ./production/odd\\nname.pp",
            "link ./production/modules/y -> ../shared/y",
        ]
    )
    listing = plan.parse_listing(text, ["*.swp", "production/data/secret*"])
    assert listing == {
        "production/manifests/site.pp": sha,
        "staging/data/secrets.yaml": sha,
        "production/odd\nname.pp": "b" * 64,
        "production/modules/y": "link:../shared/y",
    }
    other = {**listing, "production/manifests/site.pp": "c" * 64, "production/new.pp": sha}
    del other["staging/data/secrets.yaml"]
    assert plan.differences(listing, other) == [
        "differs: production/manifests/site.pp",
        "only on the master: production/new.pp",
        "missing on the master: staging/data/secrets.yaml",
    ]
    assert plan.digest_of(listing) != plan.digest_of(other)
    assert plan.digest_of(dict(reversed(list(listing.items())))) == plan.digest_of(listing)


def test_check_problems_name_the_input() -> None:
    assert plan.problems(props()) == []
    bad = dict(plan.problems(props(method="r10k", schedule="*/5 * *", excludes=["a b"], code_dir="x")))
    assert set(bad) == {"r10k_remote", "schedule", "excludes", "code_dir"}
    assert "r10k_remote" in dict(plan.problems(props(method="r10k", r10k_remote="-oProxyCommand=x")))
    assert "ssh_private_key" in dict(plan.problems(props(ssh_private_key="")))


# --- the global hiera.yaml --------------------------------------------------------------------
PE_HIERA = "/etc/puppetlabs/puppet/hiera.yaml"
SHA_A, SHA_B = "a" * 64, "b" * 64
# A stand-in `puppet`: the version and hiera_config it is told to have; records its calls.
PUPPET = """#!/bin/sh
echo "$*" >> "$CALLS"
if [ "$1" = --version ]; then echo "$VERSION"; exit 0; fi
if [ -n "$BROKEN" ]; then echo 'Error: Could not initialize global default settings' >&2; exit 1; fi
echo 'Warning: a deprecation warning on stdout' ; echo "$HIERA"
"""


def sh(script: str, env: dict[str, str], stdin: bytes = b"") -> tuple[int, str]:
    done = subprocess.run(
        ["sh", "-c", script], env={**os.environ, **env}, input=stdin, capture_output=True, timeout=30, check=False
    )
    return done.returncode, done.stdout.decode()


@pytest.fixture
def puppet(tmp_path: Path) -> Path:
    path = tmp_path / "opt" / "puppet"
    path.parent.mkdir()
    path.write_text(PUPPET)
    path.chmod(0o755)
    return path


def test_hiera_probe_asks_puppet_server_s_section_of_its_puppet_and_hashes_the_file(
    tmp_path: Path, puppet: Path
) -> None:
    """One Ruby start-up on every generation: `--section master` is Puppet Server's view from
    Puppet 3 to 8 (hiera.probe_command), so the version is never asked."""
    hiera_yaml = tmp_path / "conf" / "hiera.yaml"
    hiera_yaml.parent.mkdir()
    hiera_yaml.write_bytes(b"---\nversion: 5\n")
    calls = tmp_path / "calls"
    env = {"HIERA": str(hiera_yaml), "CALLS": str(calls)}  # no VERSION: `--version` is never asked
    code, out = sh(hiera.probe_command("/fallback/hiera.yaml", [str(tmp_path / "none"), str(puppet)]), env)
    assert code == 0, out
    found = hiera.parse_probe(out)
    assert found == hiera.HieraFile(str(hiera_yaml), hashlib.sha256(b"---\nversion: 5\n").hexdigest(), str(puppet))
    assert "section master" in out.splitlines()
    assert calls.read_text().splitlines() == ["config print hiera_config --section master"]
    hiera_yaml.unlink()  # no file: absent, not an error
    code, out = sh(hiera.probe_command("", [str(puppet)]), env)
    assert (code, hiera.parse_probe(out).digest) == (0, "")


def test_hiera_probe_without_puppet_uses_the_fallback_and_a_broken_puppet_fails(tmp_path: Path, puppet: Path) -> None:
    fallback = tmp_path / "primary's path.yaml"
    fallback.write_bytes(b"x")
    code, out = sh(hiera.probe_command(str(fallback), [str(tmp_path / "none")]), {})
    assert code == 0 and out.splitlines()[:3] == ["puppet -", "section -", f"path {fallback}"]
    assert hiera.parse_digest(out) == hashlib.sha256(b"x").hexdigest()
    code, out = sh(hiera.probe_command("", [str(tmp_path / "none")]), {})
    assert hiera.parse_probe(out) == hiera.HieraFile("", "", "")  # the caller refuses this on the primary
    code, _ = sh(hiera.probe_command("", [str(puppet)]), {"VERSION": "7.34.0", "BROKEN": "1", "CALLS": "/dev/null"})
    assert code == 3


def test_hiera_probe_parse_refuses_what_the_probe_never_prints() -> None:
    ok = f"puppet /opt/puppetlabs/bin/puppet\nsection server\npath {PE_HIERA}\nsha256 {SHA_A}\n"
    assert hiera.parse_probe(ok) == hiera.HieraFile(PE_HIERA, SHA_A, "/opt/puppetlabs/bin/puppet")
    for bad in (
        ok.replace(PE_HIERA, "hiera.yaml"),  # relative: not a path Puppet Server would read
        ok.replace(PE_HIERA, ""),
        ok.replace(SHA_A, "abc"),
        ok.replace("sha256", "digest"),
        "",
    ):
        with pytest.raises(ValueError):
            hiera.parse_probe(bad)


def test_hiera_write_is_atomic_root_owned_0644_and_leaves_no_temp_file(tmp_path: Path) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    chown = shims / "chown"  # a stand-in: the test need not run as root
    chown.write_text('#!/bin/sh\necho "$*" > "$CALLS"\n')
    chown.chmod(0o755)
    target = tmp_path / "conf" / "hiera.yaml"  # its directory does not exist yet
    env = {"PATH": f"{shims}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls")}
    for content in (b"---\nversion: 5\n", b"", b"\xff binary-safe\n"):
        code, out = sh(hiera.write_command(str(target)), env, stdin=content)
        assert (code, out) == (0, "")
        assert target.read_bytes() == content and stat.S_IMODE(target.stat().st_mode) == 0o644
        assert os.listdir(target.parent) == ["hiera.yaml"]
        assert (tmp_path / "calls").read_text().startswith("0:0 ") and ".hiera.yaml.pe-file-sync." in (
            tmp_path / "calls"
        ).read_text()
    code, out = sh(hiera.digest_command(str(target)), {})
    assert hiera.parse_digest(out) == hashlib.sha256(b"\xff binary-safe\n").hexdigest()
    (tmp_path / "dir").mkdir()  # never moved into a directory of that name
    code, _ = sh(hiera.write_command(str(tmp_path / "dir")), env, stdin=b"x")
    assert code != 0 and os.listdir(tmp_path / "dir") == []
    assert sorted(os.listdir(tmp_path)) == ["bin", "calls", "conf", "dir"]
    code, out = sh(shlex.join(hiera.read_command(str(target))), {})
    assert hiera.decode_read(out) == b"\xff binary-safe\n"
    with pytest.raises(ValueError):
        hiera.decode_read("not base64!")


def test_hiera_action_copies_only_what_differs_and_never_without_a_source() -> None:
    primary = hiera.HieraFile(PE_HIERA, SHA_A, "/opt/puppetlabs/bin/puppet")
    same = hiera.HieraFile(PE_HIERA, SHA_A)
    other = hiera.HieraFile("/etc/puppet/hiera.yaml", SHA_B, "/opt/puppetlabs/bin/puppet")
    missing = hiera.HieraFile(PE_HIERA, "")
    assert hiera.action(primary, same) == "same" and hiera.drift(primary, same) is None
    assert hiera.action(primary, other) == "copy"
    assert hiera.drift(primary, other) == "hiera.yaml differs from the primary's (/etc/puppet/hiera.yaml)"
    assert hiera.action(primary, missing) == "copy"
    assert hiera.drift(primary, missing) == f"hiera.yaml missing on the master ({PE_HIERA})"
    nothing = hiera.HieraFile(PE_HIERA, "", "/opt/puppetlabs/bin/puppet")
    assert hiera.action(nothing, other) == "leave" and hiera.drift(nothing, other) is None


class Host:
    """Stands in for SshSession: `answer(command, stdin)` -> (exit status, stdout)."""

    def __init__(self, label: str, answer: Callable[[str, bytes | None], tuple[int, str]]):
        self.target = SshTarget(label, 22, "root", "")
        self.answer = answer
        self.commands: list[str] = []

    def run(self, command: str | Sequence[str], timeout: float = 600.0, stdin: bytes | None = None) -> CommandResult:
        assert timeout <= remote.HIERA_PROBE_TIMEOUT  # every command has its deadline
        line = command if isinstance(command, str) else shlex.join(command)
        self.commands.append(line)
        status, out = self.answer(line, stdin)
        return CommandResult(self.target.label, line, status, out, "")


def probe_answer(path: str, content: bytes | None, puppet: str = "/opt/puppetlabs/bin/puppet") -> str:
    digest = hashlib.sha256(content).hexdigest() if content is not None else "absent"
    return f"puppet {puppet or '-'}\nsection server\npath {path}\nsha256 {digest}\n"


class Hosts:
    """A primary and a master whose hiera.yaml live in dicts; the master has no `puppet` yet."""

    def __init__(self, primary: bytes | None, master: bytes | None):
        self.files = {"primary": primary, "master": master}
        self.primary = Host("primary.example.com", lambda line, stdin: self.answer("primary", line, stdin))
        self.master = Host("compile01.example.com", lambda line, stdin: self.answer("master", line, stdin))

    def answer(self, host: str, line: str, stdin: bytes | None) -> tuple[int, str]:
        content = self.files[host]
        if line.startswith("p=; for c in "):
            return 0, probe_answer(PE_HIERA, content, "/opt/puppetlabs/bin/puppet" if host == "primary" else "")
        if line == hiera.digest_command(PE_HIERA):
            return 0, probe_answer(PE_HIERA, content).splitlines()[-1]
        if host == "primary" and line == shlex.join(hiera.read_command(PE_HIERA)):
            return 0, base64.encodebytes(content or b"").decode()
        if host == "master" and line == hiera.write_command(PE_HIERA):
            self.files["master"] = stdin or b""
            return 0, ""
        raise AssertionError(f"unexpected command on the {host}: {line!r}")

    def sync(self) -> file_sync.Sync:
        cfg = plan.SyncConfig.from_props(props())
        return file_sync.Sync(cfg, cast(SshSession, self.master), cast(SshSession, self.primary))


@pytest.fixture(autouse=True)
def no_remembered_primary() -> Iterator[None]:
    remote._primary_hiera.clear()
    yield
    remote._primary_hiera.clear()


def test_sync_hiera_copies_when_different_verifies_and_then_leaves_it(capsys: pytest.CaptureFixture[str]) -> None:
    content = b"---\nversion: 5\nhierarchy: [{name: secret-free}]\n"
    hosts = Hosts(content, b"---\nversion: 5\n")
    assert hosts.sync().hiera.sync() == hashlib.sha256(content).hexdigest()
    assert hosts.files["master"] == content
    # master: probe (no puppet: the primary's path), write, verify; primary: probe, read
    assert [c.split()[0] for c in hosts.master.commands] == ["p=;", "set", "if"]
    assert hiera.probe_command(PE_HIERA) == hosts.master.commands[0]
    assert len(hosts.primary.commands) == 2
    assert hashlib.sha256(content).hexdigest()[:16] in capsys.readouterr().err
    # Again: both hashed, nothing written; the primary's path is remembered (no Ruby start-up there).
    hosts.master.commands.clear()
    hosts.primary.commands.clear()
    assert hosts.sync().hiera.sync() == hashlib.sha256(content).hexdigest()
    assert hosts.primary.commands == [hiera.digest_command(PE_HIERA)] and len(hosts.master.commands) == 1
    log = capsys.readouterr().err
    assert "same as the primary's" in log and "secret-free" not in log


def test_sync_hiera_without_a_primary_file_leaves_the_master_alone(capsys: pytest.CaptureFixture[str]) -> None:
    hosts = Hosts(None, b"the master's own\n")
    assert hosts.sync().hiera.sync() == ""
    assert hosts.files["master"] == b"the master's own\n" and len(hosts.master.commands) == 1
    assert f"the primary has no {PE_HIERA}: the master's {PE_HIERA} is left alone" in capsys.readouterr().err


def test_sync_hiera_fails_when_the_copy_does_not_verify_or_the_primary_has_no_puppet() -> None:
    hosts = Hosts(b"new\n", b"old\n")
    answer = hosts.master.answer
    hosts.master.answer = lambda line, stdin: (0, "") if line.startswith("set -e") else answer(line, stdin)
    with pytest.raises(ProviderError, match="after the copy, not the primary's"):
        hosts.sync().hiera.sync()
    remote._primary_hiera.clear()
    bare = Hosts(b"new\n", None)
    bare.primary.answer = lambda _line, _stdin: (0, probe_answer("", None, ""))
    with pytest.raises(ProviderError, match="no `puppet` on the primary"):
        bare.sync().hiera.sync()
