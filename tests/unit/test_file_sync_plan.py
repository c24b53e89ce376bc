"""FileSync's pure side: what it writes on hosts, how it compares code, what check refuses."""

from __future__ import annotations

import shlex
from typing import Any

from provider import file_sync_plan as plan

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
    assert f"timeout {plan.JOB_TIMEOUT} {shlex.join(command)} || rc=$?" in script
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
