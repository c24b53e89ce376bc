"""FileSync against the lab through the engine-faithful harness: rsync with a restricted
key, r10k from the lab's control repo, NFS (the lab's simulated mount), each checked by
what is really on the hosts - files, digests, cron entries, authorized_keys, findmnt -
and the global hiera.yaml copied from the primary."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.client import LabClient, sha256_of
from lab.inhost.pelab_common import wait_for
from provider.codesync import plan
from provider.file_sync import FileSyncProvider
from tests.harness.provider_server import Engine, ProviderError, ProviderServer, Secret

pytestmark = pytest.mark.lab
CODE = "/etc/puppet/code"  # Debian Puppet's code dir (PE's is /etc/puppetlabs/code)
PRODUCTION = f"{CODE}/environments/production"
HIERA = "/etc/puppet/hiera.yaml"  # Debian Puppet's hiera_config (PE's is /etc/puppetlabs/puppet/hiera.yaml)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def sync_inputs(lab: LabClient, short: str, method: str, **overrides: Any) -> dict[str, Any]:
    key = Path(lab.key).read_text()
    primary = lab.host("primary")
    props: dict[str, Any] = {
        "resource_name": f"code-{short}",
        "method": method,
        "host": lab.host(short).fqdn,
        "ssh_private_key": Secret(key),
        "ssh_known_hosts": Path(lab.known_hosts).read_text(),
        "primary_host": primary.fqdn,
        "primary_ssh_private_key": Secret(key),
        "primary_ssh_host_key": " ".join(Path(f"{primary.paths.host_key}.pub").read_text().split()[:2]),
        "code_dir": CODE,
        "schedule": "* * * * *",
        "sync_timeout": 60,
    }
    if method == "r10k":
        props["r10k_remote"] = f"{lab.root}/git/control-repo.git"
        props["r10k_cachedir"] = "/var/cache/puppet/r10k"  # per lab host
    props.update(overrides)
    return props


def digest(lab: LabClient, short: str, excludes: list[str] | None = None) -> str:
    out = lab.host(short).run(plan.digest_command(f"{CODE}/environments")).check().stdout
    return plan.digest_of(plan.parse_listing(out, excludes or []))


def commit_to_control_repo(lab: LabClient, path: str, text: str | None) -> None:
    """Push a change to the lab's control repo (text None = delete the file)."""
    with tempfile.TemporaryDirectory() as work:
        git = ["git", "-C", work, "-c", "user.name=pelab", "-c", "user.email=pelab@pelab.test"]
        subprocess.run(["git", "clone", "-q", f"{lab.root}/git/control-repo.git", work], check=True)
        if text is None:
            subprocess.run([*git, "rm", "-q", path], check=True)
        else:
            (Path(work) / path).write_text(text)
            subprocess.run([*git, "add", path], check=True)
        subprocess.run([*git, "commit", "-q", "-m", f"change {path}"], check=True)
        subprocess.run([*git, "push", "-q", "origin", "production"], check=True)


def test_rsync_and_r10k_jobs_carry_a_change_from_the_primary(lab: LabClient, server: ProviderServer) -> None:
    primary = lab.host("primary")
    rsync = Engine(server, FileSyncProvider(), "code-compile07", "FileSync")
    r10k = Engine(server, FileSyncProvider(), "code-compile10", "FileSync")
    rsync_inputs = sync_inputs(lab, "compile07", "rsync", excludes=["*.swp"])
    r10k_inputs = sync_inputs(lab, "compile10", "r10k", excludes=["*.swp"])
    marker = f"pelab-sync-{time.time_ns()}.txt"
    try:
        state = rsync.up(rsync_inputs)
        assert state.outputs["status"] == "in sync" and state.outputs["files"] >= 5
        assert state.outputs["digest"] == digest(lab, "compile07") == digest(lab, "primary")
        # The master's key may do one thing on the primary: a read-only rsync of the environments.
        line = next(li for li in (primary.read("/root/.ssh/authorized_keys") or "").splitlines() if "compile07" in li)
        assert line.startswith(f'restrict,command="/usr/bin/rrsync -ro {CODE}/environments" ssh-ed25519 ')
        shell = lab.host("compile07").run(
            "ssh -i /etc/puppetlabs/pe-file-sync/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=yes "
            "-o UserKnownHostsFile=/etc/puppetlabs/pe-file-sync/known_hosts root@primary.pelab.test id"
        )
        assert "uid=0" not in shell.stdout  # no shell for the sync key
        cron = lab.host("compile07").read(plan.CRON_FILE) or ""
        assert "* * * * * root /etc/puppetlabs/pe-file-sync/sync" in cron

        state = r10k.up(r10k_inputs)
        assert state.outputs["status"] == "in sync"
        r10k_yaml = lab.host("compile10").read("/etc/puppetlabs/r10k/r10k.yaml") or ""
        assert f"basedir: {CODE}/environments" in r10k_yaml and "control-repo.git" in r10k_yaml
        assert state.outputs["digest"] == digest(lab, "primary")
        assert Path(lab.key).read_text().split("\n")[1] not in json.dumps(state.serialized_state()) + server.text()

        # A change on the primary (for r10k: pushed to the control repo and deployed on
        # the primary) reaches both masters by their periodic jobs alone.
        primary.run(f"echo change > {PRODUCTION}/{marker} && echo scratch > {PRODUCTION}/editor.swp").check()
        commit_to_control_repo(lab, marker, "change\n")
        for short in ("compile07", "compile10"):
            assert wait_for(lambda s=short: lab.host(s).read(f"{PRODUCTION}/{marker}") == "change\n", 150, 2), short
        assert lab.host("compile07").read(f"{PRODUCTION}/editor.swp") is None  # excluded
        assert wait_for(lambda: digest(lab, "compile07", ["*.swp"]) == digest(lab, "primary", ["*.swp"]), 10)
        assert (lab.host("compile07").read("/etc/puppetlabs/pe-file-sync/last-run") or "").split()[1] == "0"
        for engine in (rsync, r10k):
            refreshed = engine.refresh()
            assert refreshed is not None and refreshed.outputs["status"] == "in sync", refreshed

        # Schedule changes in place; the job follows.
        rsync_inputs["schedule"] = "*/2 * * * *"
        _, diff = rsync.preview(rsync_inputs)
        assert diff is not None and diff.changes == "some" and not diff.replaces
        rsync.up(rsync_inputs)
        assert "*/2 * * * * root" in (lab.host("compile07").read(plan.CRON_FILE) or "")
        # A removed job is drift.
        lab.host("compile07").run(f"rm {plan.CRON_FILE}").check()
        drifted = rsync.refresh()
        assert drifted is not None and "periodic job missing" in drifted.outputs["status"]
        rsync.up(rsync_inputs)
        assert lab.host("compile07").read(plan.CRON_FILE)
    finally:
        primary.run(f"rm -f {PRODUCTION}/{marker} {PRODUCTION}/editor.swp")
        if lab.host("compile10").read(f"{PRODUCTION}/{marker}") is not None:
            commit_to_control_repo(lab, marker, None)
        rsync.destroy()
        r10k.destroy()
    # Delete: job, key and config gone; the primary no longer trusts the key; code kept.
    assert lab.host("compile07").read(plan.CRON_FILE) is None
    assert "compile07" not in (primary.read("/root/.ssh/authorized_keys") or "")
    assert lab.host("compile07").read("/etc/puppetlabs/pe-file-sync/id_ed25519") is None
    assert lab.host("compile10").read("/etc/puppetlabs/r10k/r10k.yaml") is None
    assert (
        lab.host("compile07").read(f"{PRODUCTION}/environment.conf") is not None
        or lab.host("compile07").run(f"test -d {PRODUCTION}/modules").exit_status == 0
    )


def test_create_refuses_to_finish_while_the_digests_differ(lab: LabClient, server: ProviderServer) -> None:
    primary = lab.host("primary")
    engine = Engine(server, FileSyncProvider(), "code-compile12", "FileSync")
    inputs = sync_inputs(lab, "compile12", "r10k", sync_timeout=5)
    primary.run(f"echo local-edit > {PRODUCTION}/uncommitted.txt").check()  # on the primary, not in git
    try:
        with pytest.raises(ProviderError) as failed:
            engine.up(inputs)
        details = failed.value.details
        assert "missing on the master: production/uncommitted.txt" in details
        assert "compile12.pelab.test" in details and "run `pulumi up` again" in details
        assert engine.state is None
    finally:
        primary.run(f"rm -f {PRODUCTION}/uncommitted.txt").check()
    state = engine.up(inputs)  # the primary is consistent again: create completes
    assert state.outputs["status"] == "in sync"
    inputs["remove_code_on_delete"] = True
    engine.up(inputs)
    engine.destroy()
    assert lab.host("compile12").run(f"ls -A {CODE}/environments").stdout.strip() == ""


def test_a_codedir_that_pe_file_sync_owns_is_refused(lab: LabClient, server: ProviderServer) -> None:
    """PE 2015.3+ with Code Manager on: file sync overwrites the masters' live codedir, so a
    second writer is refused before anything is set up (peadm checks the same file)."""
    primary = lab.host("primary")
    engine = Engine(server, FileSyncProvider(), "code-compile12", "FileSync")
    primary.run(f"mkdir -p {Path(plan.CODE_MANAGER_CONF).parent} && touch {plan.CODE_MANAGER_CONF}").check()
    try:
        with pytest.raises(ProviderError) as refused:
            engine.up(sync_inputs(lab, "compile12", "rsync"))
        assert "Code Manager is configured" in refused.value.details and engine.state is None
        assert lab.host("compile12").read("/etc/cron.d/pe-file-sync") is None
    finally:
        primary.run(f"rm -f {plan.CODE_MANAGER_CONF}").check()


def test_nfs_mount_through_fstab_verified_with_findmnt(lab: LabClient, server: ProviderServer) -> None:
    host, primary = lab.host("compile11"), lab.host("primary")
    engine = Engine(server, FileSyncProvider(), "code-compile11", "FileSync")
    inputs = sync_inputs(lab, "compile11", "nfs")
    state = engine.up(inputs)
    try:
        assert state.outputs["status"] == "in sync" and state.outputs["job"] == ""
        entry = f"primary.pelab.test:{CODE}/environments {CODE}/environments nfs ro 0 0"
        assert entry in (host.read("/etc/fstab") or "").splitlines()
        assert host.run(f"findmnt -n --mountpoint {CODE}/environments").exit_status == 0
        assert state.outputs["digest"] == digest(lab, "primary")
        # Shared, not copied: a change on the primary is there at once.
        primary.run(f"echo now > {PRODUCTION}/nfs-marker.txt").check()
        assert host.run(f"cat {PRODUCTION}/nfs-marker.txt").stdout == "now\n"  # (read() sees under the mount)
        primary.run(f"rm -f {PRODUCTION}/nfs-marker.txt").check()
        # Unmounted behind our back: drift; up mounts it again from fstab.
        host.run(f"umount {CODE}/environments").check()
        drifted = engine.refresh()
        assert drifted is not None and "not mounted" in drifted.outputs["status"]
        assert engine.up(inputs).outputs["status"] == "in sync"
    finally:
        engine.destroy()
    assert host.run(f"findmnt -n --mountpoint {CODE}/environments").exit_status != 0
    assert "pe-file-sync" not in (host.read("/etc/fstab") or "")


def test_the_global_hiera_yaml_follows_the_primarys(lab: LabClient, server: ProviderServer) -> None:
    """peadm's add_compiler copies the primary's hiera.yaml to a new compiler: FileSync does,
    to a bare master (the primary's path) and to one with an agent (its own hiera_config),
    only when the digests differ, and leaves the master's alone when the primary has none."""
    primary, host = lab.host("primary"), lab.host("compile12")
    engine = Engine(server, FileSyncProvider(), "code-compile12", "FileSync")
    inputs = sync_inputs(lab, "compile12", "rsync")
    original, original_master = primary.read(HIERA), host.read(HIERA)
    assert original is not None
    marker = f"pelab-hiera-{time.time_ns()}"
    changed = original + f"# {marker}\n"
    host.wipe_agent()  # bare: no `puppet` there yet, as before PeCompileMaster installs it
    try:
        primary.put(HIERA, changed.encode())
        state = engine.up(inputs)
        assert state.outputs["status"] == "in sync" and host.read(HIERA) == changed
        assert state.outputs["hiera_digest"] == sha256_of(changed)
        assert host.run(f"stat -c '%a %U:%G' {HIERA}").check().stdout.strip() == "644 root:root"
        assert "pe-file-sync" not in host.run("ls -A /etc/puppet").check().stdout  # no temp file left
        assert marker not in server.text()  # digests are logged, never the content
        refreshed = engine.refresh()
        assert refreshed is not None and refreshed.outputs["status"] == "in sync"
        assert refreshed.outputs["hiera_digest"] == sha256_of(changed)

        # With the generation's agent installed, the master's own `puppet config print` names the path.
        host.run(f"{lab.root}/inhost/bin/pelab-pe-install agent").check()
        # As the probe asks (`--section master`: Puppet Server's view on every generation,
        # [server] first from Puppet 6.19 on), and the same as `--section server` there.
        puppet = f"{lab.profile.bin_dir}/puppet config print hiera_config"
        printed = host.run(f"{puppet} --section master").check()
        assert printed.stdout.strip() == HIERA
        assert host.run(f"{puppet} --section server").check().stdout == printed.stdout
        host.put(HIERA, original.encode())  # changed behind our back: drift, and `up` copies again
        drifted = engine.refresh()
        assert drifted is not None and f"hiera.yaml differs from the primary's ({HIERA})" in drifted.outputs["status"]
        assert drifted.outputs["hiera_digest"] == sha256_of(original)
        _, diff = engine.preview(inputs)
        assert diff is not None and diff.changes == "some" and not diff.replaces
        state = engine.up(inputs)
        assert state.outputs["status"] == "in sync" and host.read(HIERA) == changed

        # No hiera.yaml on the primary: the master's is left as it is.
        primary.run(f"mv {HIERA} {HIERA}.pelab-saved").check()
        inputs["schedule"] = "*/3 * * * *"  # an update that converges
        state = engine.up(inputs)
        assert state.outputs["hiera_digest"] == "" and host.read(HIERA) == changed
        assert "the primary has no /etc/puppet/hiera.yaml" in server.text()
    finally:
        primary.run(f"rm -f {HIERA}.pelab-saved")
        primary.put(HIERA, original.encode())
        engine.destroy()
        host.wipe_agent()
        if original_master is not None:
            host.put(HIERA, original_master.encode())
    assert primary.read(HIERA) == original


@pytest.mark.parametrize(
    ("override", "prop"),
    [
        ({"method": "ftp"}, "method"),
        ({"schedule": "* * *"}, "schedule"),
        ({"schedule": "* * * * * ; reboot"}, "schedule"),
        ({"excludes": ["a b"]}, "excludes"),
        ({"code_dir": "etc/code"}, "code_dir"),
        ({"method": "r10k", "r10k_remote": "--upload-pack=touch /tmp/x"}, "r10k_remote"),
        ({"primary_ssh_port": 0}, "primary_ssh_port"),
    ],
)
def test_bad_input_is_refused_by_check(
    lab: LabClient, server: ProviderServer, override: dict[str, Any], prop: str
) -> None:
    engine = Engine(server, FileSyncProvider(), "code-bad", "FileSync")
    before = lab.host("compile16").read(plan.CRON_FILE)
    checked = engine.check({**sync_inputs(lab, "compile16", "rsync"), **override})
    assert prop in [p for p, _ in checked.failures], checked.failures
    assert lab.host("compile16").read(plan.CRON_FILE) == before
