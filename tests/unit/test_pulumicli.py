"""The CLI runner's pure parts (pulumicli/cli.py) and the provider's engine watch."""

from __future__ import annotations

import contextlib
import socket
import threading

from provider.core import engine_watch
from pulumicli import cli


def test_the_program_is_served_to_the_commands_that_run_it() -> None:
    assert cli.command_of(["up", "--yes"]) == "up"
    assert cli.command_of(["--cwd", "x", "preview"]) == "preview"
    assert cli.command_of(["--color=never", "-C", "x", "up"]) == "up"
    assert cli.command_of(["config", "set", "key", "up"]) == "config"
    assert cli.command_of(["--non-interactive", "refresh"]) == "refresh"
    assert {"up", "preview", "refresh", "destroy"} <= cli.PROGRAM_COMMANDS
    assert "stack" not in cli.PROGRAM_COMMANDS and "cancel" not in cli.PROGRAM_COMMANDS


def test_a_cli_on_path_is_used_from_3_181() -> None:
    assert cli.parse_version("v3.276.0\n") == (3, 276, 0)
    assert cli.parse_version("3.181.0-dev") == (3, 181, 0)
    assert cli.parse_version("") is None
    assert (3, 180, 9) < cli.MIN_PATH_VERSION <= (3, 181, 0)


def test_the_pinned_version_is_go_mods() -> None:
    assert cli.pinned_version() == "v3.276.0"
    assert cli.built_dir().name == "v3.276.0"


def test_the_plugin_runs_the_runners_python() -> None:
    env = cli.cli_env(cli.built_dir() / "pulumi", {"PATH": "/usr/bin"})
    assert env["PULUMI_PYTHON_CMD"]
    assert env["PATH"].split(":")[0] == str(cli.built_dir())
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert (
        cli.cli_env(cli.built_dir() / "pulumi", {"PULUMI_PYTHON_CMD": "/x/python"})["PULUMI_PYTHON_CMD"] == "/x/python"
    )


def test_the_engine_address_is_the_plugins_argument() -> None:
    assert engine_watch.engine_address(["__main__.py", "127.0.0.1:44139"]) == ("127.0.0.1", 44139)
    assert engine_watch.engine_address(["__main__.py"]) is None  # the harness's server: not watched
    assert engine_watch.engine_address(["__main__.py", "nonsense"]) is None


def test_an_engine_that_answers_is_there_and_a_closed_port_is_not() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    address = listener.getsockname()
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                listener.accept()[0].close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        assert engine_watch._answers(address)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert not engine_watch._answers(address)
