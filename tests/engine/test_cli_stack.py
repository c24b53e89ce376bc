"""tests/cli_stack.py's own promise: `resources()` answers from the last export while the
backend's files are unchanged, and exports again after any command that changed them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli_stack import CliStack


def test_resources_are_exported_again_only_after_the_state_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(a: str) -> dict[str, Any]:
        return {"t:journal": str(tmp_path / "journal"), "t:resources": [{"name": "r1", "A": a}], "t:files": []}

    stack = CliStack("t-cache", tmp_path / "stack", config("a"), program="tests.engine.cli_program:program")
    stack.up()
    exports: list[tuple[str, ...]] = []
    export = stack.export

    def counted(*extra: str) -> dict[str, Any]:
        exports.append(extra)
        return export(*extra)

    monkeypatch.setattr(stack, "export", counted)
    first = stack.outputs("r1")
    assert first["A"] == "a"
    first["A"] = "edited by the caller"  # a copy: the cache is not the caller's to change
    assert stack.outputs("r1")["A"] == "a"
    assert len(exports) == 1
    stack.set_config(config("b"))  # the config file is not the state
    stack.preview()  # nor is a preview
    assert stack.outputs("r1")["A"] == "a" and len(exports) == 1
    stack.up()
    assert stack.outputs("r1")["A"] == "b" and len(exports) == 2
