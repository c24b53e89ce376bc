"""A stack driven through the real Pulumi CLI (scripts/pulumi: the built CLI with the
program served in-process), for the tests that prove the lifecycle through the engine.

Each `CliStack` has its own local state backend and PULUMI_HOME under `workdir`, a
passphrase secrets provider, and its config in a file passed with `--config-file`, so
tests never touch the lab's own `lab` stack nor each other. Every program command writes
the engine's event log (`--event-log`); `CliRun.steps()` reads the steps the engine took
from it, in the order it began them.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PULUMI = ROOT / "scripts" / "pulumi"
PASSPHRASE = "cli-stack-test-passphrase"
PROGRAM_COMMANDS = ("up", "preview", "refresh", "destroy")


class CliError(AssertionError):
    pass


@dataclass
class CliRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def steps(self, *, include_same: bool = False) -> list[tuple[str, str]]:
        """(op, resource name) of every step the engine began, in its order, the stack,
        components and default providers left out (they carry no work). A refresh's steps
        are named by what it found: `update` (drift), `delete` (gone), `same`."""
        out: list[tuple[str, str]] = []
        refreshed: dict[str, int] = {}
        for event in self.events:
            for kind in ("resourcePreEvent", "resOutputsEvent"):
                if kind not in event:
                    continue
                meta = event[kind]["metadata"]
                kind_of = str(meta.get("type", ""))
                if kind_of == "pulumi:pulumi:Stack" or kind_of.startswith(("pe:index:", "pulumi:providers:")):
                    continue
                name = str(meta["urn"]).rsplit("::", 1)[-1]
                if kind == "resOutputsEvent":
                    if name in refreshed:
                        out[refreshed.pop(name)] = (str(meta["op"]), name)
                    continue
                if meta["op"] == "refresh":
                    refreshed[name] = len(out)
                out.append((str(meta["op"]), name))
        for name, index in refreshed.items():  # read, then gone: no outputs event
            out[index] = ("delete", name)
        return [step for step in out if include_same or step[0] != "same"]

    def diagnostics(self) -> str:
        """Every diagnostic line the engine shows (the dynamic plugin's progress lines)."""
        return "".join(str(e["diagnosticEvent"].get("message", "")) for e in self.events if "diagnosticEvent" in e)

    def summary(self) -> dict[str, int]:
        for event in self.events:
            if "summaryEvent" in event:
                return dict(event["summaryEvent"].get("resourceChanges") or {})
        return {}


class CliStack:
    def __init__(
        self,
        name: str,
        workdir: Path,
        config: Mapping[str, Any],
        program: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.config_file = workdir / f"Pulumi.{name}.yaml"
        (workdir / "state").mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "PULUMI_BACKEND_URL": f"file://{workdir / 'state'}",
            "PULUMI_HOME": str(workdir / "home"),
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            # --event-log is among the CLI's debug commands (pkg/cmd/pulumi/operations/up.go);
            # the automation API turns them on the same way.
            "PULUMI_DEBUG_COMMANDS": "true",
            **(env or {}),
        }
        if program:
            self.env["PULUMICLI_PROGRAM"] = program
        self._exported: tuple[tuple[tuple[str, int, int], ...], dict[str, dict[str, Any]]] | None = None
        self.salt = self._create()
        self.set_config(config)

    def _create(self) -> str:
        """Create the stack. The CLI writes the passphrase's salt into the project's
        Pulumi.<stack>.yaml; it moves into this stack's own config file (every command
        passes it with --config-file), so nothing is left in the project directory."""
        project_file = ROOT / f"Pulumi.{self.name}.yaml"
        if project_file.exists():
            raise CliError(f"{project_file} exists: pick another stack name for the test")
        try:
            self.cli("stack", "select", "--create", self.name, "--non-interactive")
            return str(yaml.safe_load(project_file.read_text())["encryptionsalt"])
        finally:
            project_file.unlink(missing_ok=True)

    def set_config(self, config: Mapping[str, Any]) -> None:
        self.config_file.write_text(yaml.safe_dump({"encryptionsalt": self.salt, "config": dict(config)}))

    def _args(self, command: str, extra: tuple[str, ...]) -> list[str]:
        args = [*command.split(), *extra]
        if command.split()[0] in PROGRAM_COMMANDS:
            args += ["--stack", self.name, "--config-file", str(self.config_file), "--non-interactive"]
        return args

    def start(self, command: str, *extra: str, event_log: Path | None = None) -> subprocess.Popen[str]:
        """Start a command without waiting (for interruption tests). The runner leads its own
        process group, so a test can send it what a terminal's Ctrl-C sends."""
        args = self._args(command, extra)
        if event_log is not None:
            args += ["--event-log", str(event_log)]
        return subprocess.Popen(
            [str(PULUMI), *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def cli(self, command: str, *extra: str, check: bool = True, timeout: float = 1800) -> CliRun:
        program = command.split()[0] in PROGRAM_COMMANDS
        log = self.workdir / f"events-{time.monotonic_ns()}.jsonl"
        proc = self.start(command, *extra, event_log=log if program else None)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise CliError(
                f"pulumi {command} timed out after {timeout} s:\n{stdout[-4000:]}\n{stderr[-4000:]}"
            ) from None
        run = CliRun([command, *extra], proc.returncode, stdout, stderr, read_events(log) if program else [])
        if check and run.returncode != 0:
            raise CliError(f"pulumi {' '.join(run.args)} exited {run.returncode}:\n{run.text[-6000:]}")
        return run

    def up(self, *extra: str, **kw: Any) -> CliRun:
        return self.cli("up", "--yes", "--skip-preview", *extra, **kw)

    def preview(self, *extra: str, **kw: Any) -> CliRun:
        return self.cli("preview", *extra, **kw)

    def preview_json(self, *extra: str) -> dict[str, Any]:
        """`pulumi preview --json`: the plan the CLI prints for machines (steps with op,
        urn, diffs and the changed keys)."""
        run = self.cli("preview", "--json", *extra)
        return dict(json.loads(run.stdout))

    def refresh(self, *extra: str, **kw: Any) -> CliRun:
        return self.cli("refresh", "--yes", "--skip-preview", *extra, **kw)

    def destroy(self, *extra: str, **kw: Any) -> CliRun:
        return self.cli("destroy", "--yes", "--skip-preview", *extra, **kw)

    def export(self, *extra: str) -> dict[str, Any]:
        return dict(json.loads(self.cli("stack", "export", "--stack", self.name, *extra).stdout))

    def resources(self) -> dict[str, dict[str, Any]]:
        """The stack's state by resource name (`stack export --show-secrets`): id, inputs,
        outputs. Exported again only when the backend's files changed since the last export
        (a CLI start per look is ~0.4 s, and a test looks at several resources per step)."""
        version = self._state_version()
        if self._exported is None or self._exported[0] != version:
            deployment = self.export("--show-secrets")["deployment"]
            resources = {str(r["urn"]).rsplit("::", 1)[-1]: r for r in deployment.get("resources") or []}
            self._exported = (version, resources)
        return copy.deepcopy(self._exported[1])

    def _state_version(self) -> tuple[tuple[str, int, int], ...]:
        """Every file of the local backend with its size and modification time: what any
        command (or a test editing the state) changes."""
        files = sorted(p for p in (self.workdir / "state").rglob("*") if p.is_file())
        return tuple((str(p), (st := p.stat()).st_mtime_ns, st.st_size) for p in files)

    def outputs(self, name: str) -> dict[str, Any]:
        return dict(self.resources()[name].get("outputs") or {})

    def stack_outputs(self) -> dict[str, Any]:
        return dict(json.loads(self.cli("stack", "output", "--json", "--show-secrets", "--stack", self.name).stdout))


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.unlink()
    return events


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
