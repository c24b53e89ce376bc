"""Resource-graph tests with `pulumi.runtime.set_mocks`: who depends on whom, what flows where.

`run_program(fn)` runs a Pulumi program function (or builds components) against mocks
and returns every registered resource with its type, name, parent, inputs, explicit and
property dependencies and options. Provider methods are never called here (the provider
server tests cover behaviour); a provider that cannot be pickled fails here too, as it
would under `pulumi up`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    parent: str
    inputs: dict[str, Any]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    delete_before_replace: bool
    additional_secret_outputs: list[str]
    custom: bool
    secret_inputs: set[str] = field(default_factory=set)
    delete_before_replace_defined: bool = False  # the option was set (True or False) by the program


class RecordingMocks(Mocks):
    def __init__(self) -> None:
        self.resources: dict[str, Registered] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: Any) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


def _install_recorder(mocks: RecordingMocks) -> None:
    """Wrap the mock monitor so each RegisterResource request (with its dependencies,
    which MockResourceArgs does not carry) is recorded."""
    monitor = settings.SETTINGS.monitor
    assert isinstance(monitor, MockMonitor)
    original = monitor.RegisterResource

    def register(request: Any) -> Any:
        response = original(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
            secret = {
                k
                for k, v in request.object.fields.items()
                if v.HasField("struct_value")
                and rpc._special_sig_key in v.struct_value.fields
                and v.struct_value.fields[rpc._special_sig_key].string_value == rpc._special_secret_sig
            }
            mocks.resources[response.urn] = Registered(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                inputs=dict(inputs),
                dependencies=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                delete_before_replace=bool(request.deleteBeforeReplace),
                additional_secret_outputs=list(request.additionalSecretOutputs),
                custom=bool(request.custom),
                secret_inputs=secret,
                delete_before_replace_defined=bool(request.deleteBeforeReplaceDefined),
            )
        return response

    monitor.RegisterResource = register  # type: ignore[method-assign]


def run_program(
    program: Callable[[], Any],
    project: str = "pe-compile-masters",
    stack: str = "test",
    config: dict[str, str] | None = None,
) -> RecordingMocks:
    """Run `program` under mocks and wait for every resource registration to finish."""
    mocks = RecordingMocks()
    if config is not None:
        pulumi.runtime.set_all_config(config)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False)
    _install_recorder(mocks)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def _run() -> Any:
        program()
        return pulumi.Output.from_input(None)

    _run()
    return mocks


def by_name(mocks: RecordingMocks, name: str) -> Registered:
    matches = [r for r in mocks.resources.values() if r.name == name]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} resources named {name!r}: {[r.name for r in mocks.resources.values()]}")
    return matches[0]
