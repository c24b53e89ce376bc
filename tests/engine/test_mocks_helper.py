"""The set_mocks helper records the graph: types, parents, dependencies and secrets."""

from __future__ import annotations

import pulumi

from tests.harness.echo_provider import EchoFile
from tests.harness.mocks import by_name, run_program


class Pair(pulumi.ComponentResource):
    def __init__(self, name: str) -> None:
        super().__init__("pe:index:Pair", name)
        first = EchoFile(
            f"{name}-first", "/tmp/first", pulumi.Output.secret("s3cret"), pulumi.ResourceOptions(parent=self)
        )
        EchoFile(
            f"{name}-second",
            "/tmp/second",
            first.size.apply(str),
            pulumi.ResourceOptions(parent=self, depends_on=[first], delete_before_replace=True),
        )
        self.register_outputs({})


def test_run_program_records_types_parents_dependencies_and_secrets() -> None:
    mocks = run_program(lambda: Pair("p"))
    component = by_name(mocks, "p")
    first, second = by_name(mocks, "p-first"), by_name(mocks, "p-second")
    assert component.type == "pe:index:Pair" and not component.custom
    assert first.type == "pulumi-python:dynamic:Resource" and first.custom
    assert first.parent == component.urn and second.parent == component.urn
    assert first.urn in second.dependencies
    assert first.urn in second.property_dependencies["content"]
    assert second.delete_before_replace
    assert "content" in first.secret_inputs and "__provider" in first.secret_inputs
    assert "path" not in first.secret_inputs
