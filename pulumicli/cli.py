"""Find the Pulumi CLI and run it with the program served in-process (see __init__)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GO_MOD = ROOT / "tools" / "pulumi-cli" / "go.mod"
# Inline programs need `refresh`/`destroy` with --client: CLI 3.181+ (automation/_stack.py,
# _check_inline_support); scripts/install-pulumi.sh uses a CLI on PATH from this version.
MIN_PATH_VERSION = (3, 181, 0)
# Commands that run or may consult the program: the CLI takes `--client` for these.
PROGRAM_COMMANDS = frozenset({"up", "update", "preview", "pre", "refresh", "destroy", "down", "import"})
# Offline defaults: no update check, no plugin downloads (every plugin is beside the CLI).
OFFLINE_ENV = {"PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}


class CliNotFoundError(RuntimeError):
    pass


def pinned_version() -> str:
    """The CLI version the project builds: tools/pulumi-cli/go.mod's pkg/v3 line."""
    match = re.search(r"github\.com/pulumi/pulumi/pkg/v3 (v[0-9.]+)\s*$", GO_MOD.read_text(), re.M)
    if match is None:
        raise CliNotFoundError(f"{GO_MOD}: no github.com/pulumi/pulumi/pkg/v3 requirement")
    return match.group(1)


def built_dir(version: str | None = None) -> Path:
    """Where scripts/install-pulumi.sh builds the CLI: per version, outside the clone."""
    return Path(os.environ.get("PULUMI_CLI_DIR") or f"/opt/pe-compile-masters/pulumi/{version or pinned_version()}")


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def find_cli() -> Path:
    """The CLI scripts/install-pulumi.sh chose: the built one for the pinned version, else
    a `pulumi` >= 3.181 on PATH."""
    built = built_dir() / "pulumi"
    if built.is_file() and os.access(built, os.X_OK):
        return built
    on_path = shutil.which("pulumi")
    if on_path is not None:
        out = subprocess.run([on_path, "version"], capture_output=True, text=True, timeout=60, check=False)
        have = parse_version(out.stdout)
        if have is not None and have >= MIN_PATH_VERSION:
            return Path(on_path)
    raise CliNotFoundError(f"no Pulumi CLI: run `make deps` (builds {pinned_version()} into {built.parent})")


# The CLI's global flags that take a value as the next word (`pulumi --help`).
GLOBAL_VALUE_FLAGS = frozenset(
    {"-C", "--cwd", "--color", "--profiling", "--tracing", "--tracing-header", "--memprofilerate", "--otel-traces"}
)


def command_of(argv: Sequence[str]) -> str | None:
    """The CLI subcommand in argv: its first word that is neither a flag nor a global
    flag's value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in GLOBAL_VALUE_FLAGS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def cli_env(cli: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**OFFLINE_ENV, **(base if base is not None else os.environ)}
    env["PATH"] = f"{cli.parent}{os.pathsep}{env.get('PATH', '')}"  # the dynamic plugin sits beside it
    # The dynamic plugin runs $PULUMI_RUNTIME_VIRTUALENV/bin/python, else $PULUMI_PYTHON_CMD.
    # The CLI derives the first from Pulumi.yaml's `virtualenv` only when it starts the
    # language host itself; with --client its runtime options are just the address
    # (pkg/engine/deployment.go), so name this interpreter (the project's venv) here.
    env.setdefault("PULUMI_PYTHON_CMD", sys.executable)
    return env


def default_program() -> None:
    """The project's program; PULUMICLI_PROGRAM=module:function serves another one (the
    engine tests' small programs)."""
    import importlib

    module, _, function = (os.environ.get("PULUMICLI_PROGRAM") or "components.program:main").partition(":")
    getattr(importlib.import_module(module), function)()


@contextmanager
def served(program: Callable[[], Any]) -> Iterator[int]:
    """The SDK's own language runtime for inline programs, started as the automation API
    starts it (pulumi/automation/_stack.py); yields its port, stops it after."""
    import grpc
    from pulumi.automation._server import LanguageServer
    from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
    from pulumi.runtime.proto import language_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_CHANNEL_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageServer(program), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


def run(argv: Sequence[str], program: Callable[[], Any] = default_program) -> int:
    """The CLI with `argv` (and, for program commands, `program` served to it); its exit
    code. Ctrl-C reaches the CLI (same process group) and is ignored here, so the program
    stays served while the CLI cancels; SIGTERM is passed on."""
    cli = find_cli()
    with ExitStack() as stack:
        args = [str(cli), *argv]
        if command_of(argv) in PROGRAM_COMMANDS:
            port = stack.enter_context(served(program))
            args += [f"--client=127.0.0.1:{port}", "--exec-kind", "auto.inline"]
        proc = subprocess.Popen(args, env=cli_env(cli), cwd=ROOT)
        signal.signal(signal.SIGINT, lambda _signum, _frame: None)
        signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
        return proc.wait()


def main(argv: Sequence[str]) -> int:
    """`python -m pulumicli ARGS`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        return run(argv)
    except CliNotFoundError as exc:
        print(f"pulumicli: {exc}", file=sys.stderr)
        return 127
