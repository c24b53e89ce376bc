"""PE 2019.7+ compilers' access to PE-PostgreSQL (provider/pe/database_access.py): the probe,
ensure and remove scripts run for real by /bin/sh against temporary data directories, with
stand-in `systemctl` and `service` on PATH that record each call; then the steps that run
them (scripted hosts) and InfraRefresh's database stage."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from provider.core.errors import DeadlineError, ProviderError
from provider.infra_refresh import RefreshConfig
from provider.master import context, database, removal, steps, verify
from provider.pe import database_access
from provider.pe.generation import generation_for
from tests.unit.test_generation import SETTINGS, ScriptedHost, master_config, master_props, scripted_context, session

MAPS = generation_for("2019.8").pg_ident_maps
SERVICE = "pe-postgresql"
HEADER = """# PostgreSQL User Name Maps
# MAPNAME       SYSTEM-USERNAME         PG-USERNAME
pe-puppetdb-pe-puppetdb-map puppetdb.example.com pe-puppetdb
pe-puppetdb-pe-puppetdb-migrator-map puppetdb.example.com pe-puppetdb-migrator
pe-puppetdb-pe-puppetdb-read-map puppetdb.example.com pe-puppetdb-read
"""
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$CALLS"
[ ! -e "$STATE/reload-fails" ]
"""
SERVICE_CMD = """#!/bin/sh
echo "service $*" >> "$CALLS"
[ ! -e "$STATE/reload-fails" ]
"""


def lines_of(certname: str) -> list[str]:
    return [f"{m} {certname} {r}" for m, r in MAPS]


class Db:
    """A database host's files: data directories, the lock and reload marker, and the
    stand-in service managers' call log."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        for d in (self.bin, self.state):
            d.mkdir()
        for name, body in (("systemctl", SYSTEMCTL), ("service", SERVICE_CMD)):
            (self.bin / name).write_text(body)
            (self.bin / name).chmod(stat.S_IRWXU)
        self.calls = root / "calls"
        self.glob = str(root / "postgresql" / "*" / "data")
        self.data = self.cluster("14", pid=os.getpid())
        self.ident = self.data / "pg_ident.conf"
        self.ident.write_text(HEADER)
        self.ident.chmod(0o600)
        self.systemd = root / "systemd"  # present: systemd is PID 1
        self.systemd.mkdir()

    def cluster(self, version: str, pid: int | None) -> Path:
        data = self.root / "postgresql" / version / "data"
        data.mkdir(parents=True)
        if pid is not None:
            (data / "postmaster.pid").write_text(f"{pid}\n{data}\n1700000000\n5432\n")
        return data

    def ident_file(self) -> database_access.IdentFile:
        return database_access.IdentFile(
            str(self.data),
            MAPS,
            SERVICE,
            marker=str(self.systemd),
            lock=str(self.root / "pe-pg-ident.lock"),
            pending=str(self.root / "pe-pg-ident.reload-pending"),
        )

    def run(self, script: str) -> tuple[int, str, str, list[str]]:
        self.calls.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}:/usr/bin:/bin", "CALLS": str(self.calls), "STATE": str(self.state)}
        done = subprocess.run(
            ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        return done.returncode, done.stdout.strip(), done.stderr.strip(), self.calls.read_text().splitlines()

    def ensure(self, certname: str) -> tuple[int, str, str, list[str]]:
        return self.run(self.ident_file().ensure_script(certname))

    def remove(self, certname: str) -> tuple[int, str, str, list[str]]:
        return self.run(self.ident_file().remove_script(certname))

    def probe(self) -> str:
        code, out, err, _ = self.run(database_access.probe_script(self.glob))
        assert code == 0, err
        return database_access.data_dir_from_probe(out, "db.example.com", self.glob)


@pytest.fixture
def db(tmp_path: Path) -> Db:
    return Db(tmp_path)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --- the probe: the RUNNING cluster's data directory ----------------------------------------
def test_the_probe_finds_the_running_cluster_among_those_an_upgrade_left(db: Db) -> None:
    db.cluster("11", pid=None)  # the version before an upgrade: stopped, no postmaster.pid
    db.cluster("9.6", pid=dead_pid())  # crashed long ago: its postmaster.pid names a process that is gone
    assert db.probe() == str(db.data)


def test_no_running_postgresql_is_a_clear_error(db: Db) -> None:
    (db.data / "postmaster.pid").unlink()
    with pytest.raises(ProviderError) as failed:
        db.probe()
    assert str(failed.value).startswith(
        f"PE-PostgreSQL is not running on db.example.com (no postmaster.pid under {db.glob}"
    )
    (db.data / "postmaster.pid").write_text(f"{dead_pid()}\n")
    with pytest.raises(ProviderError, match=r"a process that is gone in .*/14/data"):
        db.probe()


def test_two_running_clusters_are_named_rather_than_guessed(db: Db) -> None:
    other = db.cluster("11", pid=os.getppid())
    with pytest.raises(ProviderError) as failed:
        db.probe()
    assert "more than one PE-PostgreSQL cluster" in str(failed.value)
    assert str(db.data) in str(failed.value) and str(other) in str(failed.value)


def test_a_data_directory_the_ssh_user_cannot_enter_is_named() -> None:
    with pytest.raises(ProviderError, match=r"cannot look inside /pg/14/data on db as the SSH user.*root"):
        database_access.data_dir_from_probe("unreadable /pg/14/data\n", "db", "/pg/*/data")
    with pytest.raises(ValueError):
        database_access.probe_script("/opt/x/*/data; reboot")


# --- ensure: check first, append what is missing, reload only then, verify ---------------
def test_ensure_adds_the_three_lines_once_and_reloads_once(db: Db) -> None:
    inode = db.ident.stat().st_ino
    code, out, err, calls = db.ensure("compile1.example.com")
    assert (code, out, err) == (0, "added 3 reloaded", "")
    assert calls == ["systemctl reload pe-postgresql.service"]
    assert db.ident.read_text() == HEADER + "".join(f"{line}\n" for line in lines_of("compile1.example.com"))
    assert db.ident.stat().st_ino == inode and stat.S_IMODE(db.ident.stat().st_mode) == 0o600  # appended in place
    # Idempotent: nothing added, no reload.
    before = db.ident.read_text()
    code, out, _, calls = db.ensure("compile1.example.com")
    assert (code, out, calls) == (0, "present", [])
    assert db.ident.read_text() == before


def test_ensure_adds_only_the_missing_lines_and_ignores_comments_and_look_alikes(db: Db) -> None:
    one, two, three = lines_of("compile1.example.com")
    db.ident.write_text(
        HEADER
        + "".join(f"{line}\n" for line in lines_of("compile10.example.com"))  # another compiler's similar name
        + f"# {two}\n"  # commented out: not present
        + f"{three} extra\n"  # four fields: not this line
        + f"  {one.replace('compile1.example.com', chr(34) + 'compile1.example.com' + chr(34))}\t# by hand\n"
    )
    code, out, _, calls = db.ensure("compile1.example.com")
    assert (code, out) == (0, "added 2 reloaded") and len(calls) == 1
    text = db.ident.read_text()
    assert text.endswith(f"{two}\n{three}\n") and f"# {two}\n" in text and f"{three} extra\n" in text


def test_ensure_starts_a_new_line_after_a_file_without_a_final_newline(db: Db) -> None:
    db.ident.write_text(HEADER.rstrip("\n"))
    assert db.ensure("compile1.example.com")[:2] == (0, "added 3 reloaded")
    assert db.ident.read_text().splitlines()[-4:] == [HEADER.splitlines()[-1], *lines_of("compile1.example.com")]


def test_without_systemd_the_sysv_service_command_reloads(db: Db) -> None:
    db.systemd.rmdir()
    assert db.ensure("compile1.example.com")[3] == ["service pe-postgresql reload"]


def test_a_failed_reload_fails_the_run_and_the_next_run_reloads_again(db: Db) -> None:
    (db.state / "reload-fails").touch()
    code, out, err, calls = db.ensure("compile1.example.com")
    assert code != 0 and "reloading pe-postgresql failed" in err and calls == ["systemctl reload pe-postgresql.service"]
    assert all(line in db.ident.read_text() for line in lines_of("compile1.example.com"))
    (db.state / "reload-fails").unlink()
    code, out, _, calls = db.ensure("compile1.example.com")  # lines present, but PostgreSQL has not read them
    assert (code, out, calls) == (0, "present reloaded", ["systemctl reload pe-postgresql.service"])
    assert db.ensure("compile1.example.com")[1:] == ("present", "", [])


def test_a_missing_pg_ident_conf_is_an_error_and_nothing_is_created(db: Db) -> None:
    db.ident.unlink()
    code, _, err, calls = db.ensure("compile1.example.com")
    assert code != 0 and "there is no" in err and "pg_ident.conf" in err and calls == []
    assert not db.ident.exists()


def test_masters_provisioned_at_once_each_get_their_lines_exactly_once(db: Db) -> None:
    names = [f"compile{i}.example.com" for i in range(1, 9)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(db.ensure, names))
    assert all(r[0] == 0 and r[1].startswith("added 3") for r in results), results
    text = db.ident.read_text().splitlines()
    assert len(text) == len(HEADER.splitlines()) + 3 * len(names)
    for name in names:
        assert all(text.count(line) == 1 for line in lines_of(name))


# --- remove: exactly this certname's lines -----------------------------------------------
def test_remove_takes_exactly_its_own_lines_and_is_idempotent(db: Db) -> None:
    for name in ("compile1.example.com", "compile10.example.com"):
        assert db.ensure(name)[0] == 0
    with db.ident.open("a") as f:
        f.write("# pe-puppetdb-pe-puppetdb-map compile1.example.com pe-puppetdb (kept: a comment)\n")
        f.write("other-map compile1.example.com pe-puppetdb\n")  # not a PuppetDB map of ours
    inode = db.ident.stat().st_ino
    code, out, err, calls = db.remove("compile1.example.com")
    assert (code, out, err) == (0, "removed 3 reloaded", "") and calls == ["systemctl reload pe-postgresql.service"]
    text = db.ident.read_text()
    assert not any(line in text.splitlines() for line in lines_of("compile1.example.com"))
    assert all(line in text.splitlines() for line in lines_of("compile10.example.com"))
    assert text.startswith(HEADER) and "(kept: a comment)" in text and "other-map compile1.example.com" in text
    assert db.ident.stat().st_ino == inode and stat.S_IMODE(db.ident.stat().st_mode) == 0o600
    assert db.remove("compile1.example.com")[1:] == ("absent", "", [])


def test_names_that_are_not_plain_are_refused_before_any_script_exists() -> None:
    for bad in ("c1 ; reboot", "$(id)", "", "-rf"):
        with pytest.raises(ValueError):
            database_access.IdentFile("/pg/data", MAPS, SERVICE).ensure_script(bad)
        with pytest.raises(ValueError):
            database_access.IdentFile("/pg/data", MAPS, SERVICE).remove_script(bad)


# --- parsing ------------------------------------------------------------------------------
def test_summaries_parse_and_anything_else_is_an_error() -> None:
    assert database_access.parse_summary("added 3 reloaded\n") == database_access.Change(3, True)
    assert database_access.parse_summary("present\n") == database_access.Change(0, False)
    assert database_access.parse_summary("present reloaded") == database_access.Change(0, True)
    assert database_access.parse_summary("removed 3 reloaded") == database_access.Change(3, True)
    assert database_access.parse_summary("absent") == database_access.Change(0, False)
    with pytest.raises(ProviderError):
        database_access.parse_summary("sh: flock: not found")


def test_puppetdb_status_is_running_only_when_puppetdb_says_so() -> None:
    running = (
        '{"detail_level":"info","service_status_version":1,"service_version":"7.20.0","state":"running",'
        '"status":{"maintenance_mode?":false,"read_db_up?":true,"write_db_up?":true,"queue_depth":0}}'
    )
    assert database_access.puppetdb_state(running) == (
        "running",
        "maintenance_mode?=false, read_db_up?=true, write_db_up?=true",
    )
    error = '{"state":"error","status":{"maintenance_mode?":false,"read_db_up?":false,"write_db_up?":false}}'
    assert database_access.puppetdb_state(error)[0] == "error"
    assert database_access.puppetdb_state('{"state":"starting"}') == ("starting", "")
    assert database_access.puppetdb_state("<html>Service Unavailable</html>") == ("", "not JSON")
    assert database_access.puppetdb_state('["running"]') == ("", "no state in the answer")


# --- the steps ----------------------------------------------------------------------------
DATA = "/opt/puppetlabs/server/data/postgresql/14/data"


def database_host(summary: str) -> ScriptedHost:
    def answer(line: str) -> tuple[int, str]:
        if line.startswith("for d in /opt/puppetlabs/server/data/postgresql/*/data"):
            return 0, f"stale /opt/puppetlabs/server/data/postgresql/11/data\nrunning {DATA}\n"
        if "pg_ident.conf" in line and "flock -w 60 9" in line:
            return 0, summary + "\n"
        raise AssertionError(f"unexpected command {line!r}")

    return ScriptedHost(answer, "db.example.com")


def logged(ctx: context.Context) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    ctx.log = lambda step, what: out.append((step, what))
    return out


def refusing() -> ScriptedHost:
    """A host that must not be asked anything."""
    return ScriptedHost(lambda line: (_ for _ in ()).throw(AssertionError(line)))


def on_database(ctx: context.Context, summary: str) -> tuple[ScriptedHost, list[tuple[str, str]]]:
    """ctx's database host, whose pg_ident.conf script prints `summary`; what ctx logs."""
    db = database_host(summary)
    ctx.database = session(db)
    return db, logged(ctx)


def test_the_database_access_step_maps_the_compiler_on_the_running_cluster() -> None:
    ctx = scripted_context(refusing())
    db, log = on_database(ctx, "added 3 reloaded")
    database.grant_database_access(ctx)
    assert len(db.commands) == 2 and f"f={DATA}/pg_ident.conf" in db.commands[1]
    assert all(f"echo '{line}'" in db.commands[1] for line in lines_of("c1.example.com"))
    assert log == [
        (
            "database access",
            f"pg_ident.conf: 3 lines added for c1.example.com, pe-postgresql reloaded (db.example.com:{DATA})",
        )
    ]
    db, log = on_database(ctx, "present")
    database.grant_database_access(ctx)
    assert log[0][1].startswith("pg_ident.conf: c1.example.com already mapped (")


def test_the_database_steps_do_nothing_before_2019_7_and_need_a_host_after() -> None:
    nothing = refusing()
    ctx = scripted_context(nothing, version="2018.1")
    database.grant_database_access(ctx)
    verify.compiler_puppetdb(ctx)
    database.remove_database_access(ctx)
    assert nothing.commands == []
    with pytest.raises(ProviderError, match=r"database_host is required from PE 2019\.7"):
        database.grant_database_access(scripted_context(nothing))


def test_create_steps_map_the_database_before_the_first_run_and_check_puppetdb_last() -> None:
    names = [name for name, _ in steps.CREATE_STEPS]
    assert names[names.index("verify certificate") + 1 : names.index("first agent run")] == ["database access"]
    assert names[-2:] == ["compile service", "compiler PuppetDB"]
    assert {"database access", "compiler PuppetDB", "remove database access"} <= set(steps.ADVICE)


def test_remove_database_access_on_delete() -> None:
    ctx = scripted_context(refusing())
    db, log = on_database(ctx, "removed 3 reloaded")
    database.remove_database_access(ctx)
    assert "awk" in db.commands[1] and "mktemp" in db.commands[1]
    assert log[0][1].startswith("pg_ident.conf: 3 lines of c1.example.com removed, pe-postgresql reloaded")
    # State recorded before the database inputs existed: said, with the lines to remove by hand.
    ctx.database = None
    log = logged(ctx)
    database.remove_database_access(ctx)
    assert "no database_host in this master's state" in log[0][1]
    assert "pe-puppetdb-pe-puppetdb-map c1.example.com pe-puppetdb" in log[0][1]


def puppetdb_answers(*bodies: str, identity: str = "") -> ScriptedHost:
    answers = list(bodies)

    def answer(line: str) -> tuple[int, str]:
        assert line == (
            f"curl -sS --max-time 10 --cacert /ca.pem {identity}"
            "https://c1.example.com:8081/status/v1/services/puppetdb-status"
        )
        return 0, answers.pop(0) if len(answers) > 1 else answers[0]

    return ScriptedHost(answer)


def test_the_compiler_puppetdb_step_waits_for_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provider.master.verify.time", SimpleNamespace(sleep=lambda _s: None, monotonic=time.monotonic))
    # With the compiler's own certificate (its PuppetDB's allowlist lists it).
    identity = f"--cert {SETTINGS['hostcert']} --key {SETTINGS['hostprivkey']} "
    running = '{"state":"running","status":{"read_db_up?":true}}'
    host = puppetdb_answers('{"state":"starting"}', running, identity=identity)
    ctx = scripted_context(host)
    ctx.agent = dict(SETTINGS)
    log = logged(ctx)
    verify.compiler_puppetdb(ctx, "/ca.pem")
    assert len(host.commands) == 2 and ctx.installed["compiler_puppetdb"] is True
    assert log == [("compiler PuppetDB", "https://c1.example.com:8081 says running")]


def test_a_compiler_puppetdb_that_never_runs_names_pg_ident_and_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 200))  # 200 s per look: the 600 s deadline passes after a few
    fake = SimpleNamespace(sleep=lambda _s: None, monotonic=lambda: float(next(clock)))
    monkeypatch.setattr("provider.master.verify.time", fake)
    host = puppetdb_answers('{"state":"error","status":{"read_db_up?":false,"write_db_up?":false}}')
    ctx = scripted_context(host)
    ctx.cfg = master_config(database_host="db.example.com")
    with pytest.raises(DeadlineError) as failed:
        verify.compiler_puppetdb(ctx, "/ca.pem")
    text = str(failed.value)
    assert "the compiler's PuppetDB did not report running within 600s" in text
    assert "error (read_db_up?=false, write_db_up?=false)" in text
    assert "pe-puppetdb-pe-puppetdb-map c1.example.com pe-puppetdb" in text and "db.example.com" in text
    assert "/var/log/puppetlabs/puppetdb/puppetdb.log" in text


# --- InfraRefresh: PE-PostgreSQL's own host runs first ----------------------------------
def refresh_props(**extra: Any) -> dict[str, Any]:
    return {
        "masters": ["c1.example.com"],
        "puppetdb_host": "puppetdb.example.com",
        "puppetdb_ssh_private_key": "k",
        "console_host": "console.example.com",
        "console_ssh_private_key": "k",
        **extra,
    }


def test_infra_refresh_runs_the_database_host_first_only_when_it_is_another_host() -> None:
    def labels(props: dict[str, Any]) -> list[str]:
        return [stage.label for stage in RefreshConfig.from_props(props).stages()]

    assert labels(refresh_props()) == ["PuppetDB run", "console run"]  # older state: no database_host
    assert labels(refresh_props(database_host="puppetdb.example.com")) == ["PuppetDB run", "console run"]
    stages = RefreshConfig.from_props(refresh_props(database_host="pg.example.com", database_ssh_port=2222)).stages()
    assert (stages[0].roles, stages[0].target.label, stages[0].listings) == (("database",), "pg.example.com:2222", ())
    assert [stage.label for stage in stages] == ["database run", "PuppetDB run", "console run"]


def test_removals_and_additions_at_once_lose_no_line(db: Db) -> None:
    """A removal rewrites the file: the lock keeps it from dropping a line another master appends meanwhile."""
    old = [f"old{i}.example.com" for i in range(1, 9)]
    new = [f"new{i}.example.com" for i in range(1, 9)]
    for name in old:
        assert db.ensure(name)[0] == 0
    with ThreadPoolExecutor(16) as pool:
        removed = [pool.submit(db.remove, name) for name in old[:4]]
        added = [pool.submit(db.ensure, name) for name in new]
        assert all(f.result()[0] == 0 for f in removed + added)
    text = db.ident.read_text().splitlines()
    for name in old[4:] + new:
        assert all(text.count(line) == 1 for line in lines_of(name)), name
    for name in old[:4]:
        assert not any(line in text for line in lines_of(name)), name


def test_a_delete_whose_database_host_is_unreachable_fails_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from provider import compile_master
    from provider.core.errors import Failed, ProviderFailure, SshUnreachableError

    opened: list[str] = []

    class Unchanged:
        def __init__(self, target: Any, *_args: Any) -> None:
            self.target = target

        def __enter__(self) -> Unchanged:
            opened.append(self.target.host)
            if self.target.host == "db.example.com":
                raise SshUnreachableError("[db.example.com] cannot open SSH within 30s (timeout)")
            return self

        def __exit__(self, *_exc: object) -> None:
            pass

        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"nothing may run: {args}")

    monkeypatch.setattr(removal, "SshSession", Unchanged)
    monkeypatch.setattr(context, "SshSession", Unchanged)
    props = {
        **master_props(),
        "database_host": "db.example.com",
        "database_ssh_private_key": "k",
        "cert_serial": "7",
    }
    with pytest.raises(ProviderFailure) as failed:  # what the engine receives: one message
        compile_master.PeCompileMasterProvider().delete("c1.example.com", props)
    assert opened == ["primary.example.com", "db.example.com"]
    assert failed.value.message.startswith("[db.example.com] delete: the database host is unreachable")
    assert "pg_ident.conf lines must be removed there, so nothing was changed" in failed.value.message
    assert isinstance(failed.value.__cause__, Failed) and str(failed.value.__cause__) == failed.value.message
