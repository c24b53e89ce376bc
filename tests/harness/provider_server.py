"""Drive the SDK's own dynamic provider server over gRPC, the way the Pulumi engine does.

The Pulumi CLI (the engine) cannot be installed here, but everything it does with a
dynamic provider goes through one gRPC protocol served by the SDK itself
(`python -u -m pulumi.dynamic`, cwd = project root). This module starts that server and
offers check / diff / create / update / read / delete with properties serialized as the
engine sends them:
  * `__provider` is `serialize_provider(provider)` (dill, by reference to provider/...);
  * secrets are stripped (the dynamic provider answers Configure with acceptSecrets=False,
    so the engine sends plaintext and re-marks outputs whose input key was secret);
  * in preview, values not known yet are the UNKNOWN sentinel.
`Engine` (below) runs one resource's lifecycle in the engine's order for tests.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from pulumi.dynamic import ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEY = "__provider"
UNKNOWN = rpc.UNKNOWN


def is_unknown(value: Any) -> bool:
    """A preview-time value the engine does not know yet (sentinel or Unknown object)."""
    from pulumi.output import Unknown

    return value == UNKNOWN or isinstance(value, Unknown)


class ProviderError(Exception):
    """A provider method raised: `details` is the traceback the server sent back."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{method} failed ({code.name}):\n{details}")
        self.method = method
        self.code = code
        self.details = details

    @property
    def message(self) -> str:
        """What the user reads: the SDK sends `traceback.format_exc()`; the provider's
        boundary (provider.core.errors.at_boundary) makes it the message first (`Failed:
        ...`, a cause without frames), then the SDK's frames, the boundary's own and one
        ProviderFailure pointing back up. Asserts that shape."""
        text = self.details
        assert text.startswith("Failed: "), text
        message, marker, tail = text.partition(
            "\n\nThe above exception was the direct cause of the following exception:"
        )
        assert marker and tail.count("Traceback (most recent call last)") == 1, text
        assert "During handling" not in text, text
        ours = [line for line in tail.splitlines() if line.strip().startswith('File "') and "/provider/" in line]
        assert len(ours) == 1 and "errors.py" in ours[0], text  # the boundary frame only
        assert tail.rstrip().endswith("provider.core.errors.ProviderFailure: the cause and what to do are above"), text
        return message.removeprefix("Failed: ").strip()


@dataclass(frozen=True)
class Secret:
    """Marks an input as a Pulumi secret (what `pulumi.Output.secret` / --secret config do)."""

    value: Any


@dataclass
class CheckResponse:
    inputs: dict[str, Any]
    failures: list[tuple[str, str]]


@dataclass
class DiffResponse:
    changes: str  # "none" | "some" | "unknown"
    replaces: list[str]
    delete_before_replace: bool


def _serialize(props: Mapping[str, Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(dict(props), {}))
    finally:
        loop.close()


def _deserialize(struct: Any) -> dict[str, Any]:
    return dict(rpc.deserialize_properties(struct, True))


class ProviderServer:
    """The SDK's provider server as a child process, with a gRPC stub to it."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        cwd: Path = PROJECT_ROOT,
        env: Mapping[str, str] | None = None,
        echo: bool = False,
    ):
        self.cwd = cwd
        self.config = dict(config or {})
        self.env = {**os.environ, **(env or {})}
        self.echo = echo
        self.output: list[str] = []
        self._lock = threading.Lock()
        # Settling (see text()): a reader asks for a tick; each drain thread reports the
        # newest tick whose empty poll of its pipe it saw after reading all before it.
        self._drained = threading.Condition(self._lock)
        self._tick = 0
        self._caught_up: dict[int, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.stub: Any = None
        self.rpc_seconds: dict[str, float] = {}  # per method: time spent in gRPC calls

    def __enter__(self) -> ProviderServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.dynamic"],
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        assert self.proc.stdout and self.proc.stderr
        first = self._first_line(self.proc.stdout.fileno())
        if not first.isdigit():
            self.proc.kill()
            rest = self.proc.stderr.read().decode(errors="replace")
            raise RuntimeError(f"provider server did not print its port: {first!r}\n{rest}")
        # Keep draining: a full pipe would block the provider mid-call.
        for stream in (self.proc.stdout, self.proc.stderr):
            self._caught_up[stream.fileno()] = 0
            threading.Thread(target=self._drain, args=(stream.fileno(),), daemon=True).start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{first}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)
        self.stub.Configure(provider_pb2.ConfigureRequest(args=_serialize(self.config), acceptSecrets=True))

    @staticmethod
    def _first_line(fd: int) -> str:
        """The port line, read unbuffered so nothing after it is left in a reader's buffer."""
        line = b""
        while not line.endswith(b"\n"):
            byte = os.read(fd, 1)
            if not byte:
                break
            line += byte
        return line.decode(errors="replace").strip()

    def _drain(self, fd: int) -> None:
        """Read one pipe of the server to its end, a line at a time into `output`."""
        pending = b""
        while True:
            with self._lock:
                tick = self._tick
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:  # everything written before `tick` was asked for is in `output`
                with self._drained:
                    self._caught_up[fd] = tick
                    self._drained.notify_all()
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                with self._drained:
                    if pending:
                        self.output.append(pending.decode(errors="replace"))
                    self._caught_up[fd] = sys.maxsize  # EOF: nothing more will come
                    self._drained.notify_all()
                return
            *lines, pending = (pending + chunk).split(b"\n")
            with self._lock:
                for raw in lines:
                    self.output.append(raw.decode(errors="replace"))
            if self.echo:
                for raw in lines:
                    print(f"[provider] {raw.decode(errors='replace')}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the server never exits by itself
            self.proc.wait(timeout=10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def text(self) -> str:
        """Everything the server printed before this call. A progress line is written
        before the gRPC answer that follows it, but a drain thread reads it a moment
        later: wait until each pipe was seen empty after this call began."""
        with self._drained:
            self._tick += 1
            wanted = self._tick
            self._drained.wait_for(lambda: min(self._caught_up.values(), default=wanted) >= wanted, timeout=10)
            return "\n".join(self.output)

    def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        started = time.perf_counter()
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise ProviderError(method, err.code(), err.details() or "") from None
        finally:  # the provider server's share of a run, without this harness's own (de)serializing
            self.rpc_seconds[method] = self.rpc_seconds.get(method, 0.0) + time.perf_counter() - started

    # --- the protocol, one method per RPC --------------------------------------------
    def check(
        self, urn: str, olds: Mapping[str, Any], news: Mapping[str, Any], timeout: float | None = None
    ) -> CheckResponse:
        resp = self._call(
            "Check", provider_pb2.CheckRequest(urn=urn, olds=_serialize(olds), news=_serialize(news)), timeout
        )
        return CheckResponse(_deserialize(resp.inputs), [(f.property, f.reason) for f in resp.failures])

    def diff(
        self, id_: str, urn: str, olds: Mapping[str, Any], news: Mapping[str, Any], timeout: float | None = None
    ) -> DiffResponse:
        resp = self._call(
            "Diff", provider_pb2.DiffRequest(id=id_, urn=urn, olds=_serialize(olds), news=_serialize(news)), timeout
        )
        changes = {provider_pb2.DiffResponse.DIFF_NONE: "none", provider_pb2.DiffResponse.DIFF_SOME: "some"}.get(
            resp.changes, "unknown"
        )
        return DiffResponse(changes, list(resp.replaces), bool(resp.deleteBeforeReplace))

    def create(self, urn: str, inputs: Mapping[str, Any], timeout: float | None = None) -> tuple[str, dict[str, Any]]:
        resp = self._call("Create", provider_pb2.CreateRequest(urn=urn, properties=_serialize(inputs)), timeout)
        return resp.id, _deserialize(resp.properties)

    def update(
        self, id_: str, urn: str, olds: Mapping[str, Any], news: Mapping[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        resp = self._call(
            "Update", provider_pb2.UpdateRequest(id=id_, urn=urn, olds=_serialize(olds), news=_serialize(news)), timeout
        )
        return _deserialize(resp.properties)

    def read(
        self, urn: str, state: StateEntry, timeout: float | None = None
    ) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """Read (refresh) a resource from its recorded state: (id, outputs, new inputs or None)."""
        props, inputs = _serialize(state.outputs), _serialize(state.inputs)
        resp = self._call(
            "Read", provider_pb2.ReadRequest(id=state.id, urn=urn, properties=props, inputs=inputs), timeout
        )
        new_inputs = _deserialize(resp.inputs) if resp.HasField("inputs") and len(resp.inputs.fields) else None
        return resp.id, _deserialize(resp.properties), new_inputs

    def delete(self, urn: str, state: StateEntry, timeout: float | None = None) -> None:
        props, inputs = _serialize(state.outputs), _serialize(state.inputs)
        req = provider_pb2.DeleteRequest(id=state.id, urn=urn, properties=props, old_inputs=inputs)
        self._call("Delete", req, timeout)


def urn_for(name: str, type_name: str, stack: str = "lab", project: str = "pe-compile-masters") -> str:
    return f"urn:pulumi:{stack}::{project}::pulumi-python:dynamic:Resource$pulumi-python:dynamic/{type_name}::{name}"


@dataclass
class StateEntry:
    """What the engine keeps in the stack state for one resource."""

    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    secret_keys: set[str] = field(default_factory=set)

    def serialized_state(self) -> dict[str, Any]:
        """Outputs as the engine would write them: keys whose input was secret are
        replaced by the engine's secret envelope (ciphertext in real state)."""
        return {
            k: (
                {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "<encrypted>"}
                if k in self.secret_keys
                else v
            )
            for k, v in self.outputs.items()
        }


class Engine:
    """One dynamic resource driven through the provider server in the engine's order.

    preview(): Check, then Diff against the state (no Create/Update).
    up(): preview, then Create / Update / replace (delete-before-replace when asked).
    refresh(): Read with the old outputs; an empty id drops the resource from state.
    destroy(): Delete with the old outputs.
    """

    def __init__(self, server: ProviderServer, provider: ResourceProvider, name: str, type_name: str):
        self.server = server
        self.provider_blob = serialize_provider(provider)
        self.name = name
        self.urn = urn_for(name, type_name)
        self.state: StateEntry | None = None
        self.calls: list[str] = []

    def _plain(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
        plain: dict[str, Any] = {}
        secret = {PROVIDER_KEY}  # dynamic.Resource always makes __provider a secret
        for key, value in inputs.items():
            if isinstance(value, Secret):
                secret.add(key)
                value = value.value
            if value is None:
                continue  # the engine drops None inputs
            plain[key] = value
        plain[PROVIDER_KEY] = self.provider_blob
        return plain, secret

    def check(self, inputs: Mapping[str, Any]) -> CheckResponse:
        plain, _ = self._plain(inputs)
        olds = self.state.inputs if self.state else {}
        self.calls.append("check")
        return self.server.check(self.urn, olds, plain)

    def preview(self, inputs: Mapping[str, Any]) -> tuple[CheckResponse, DiffResponse | None]:
        checked = self.check(inputs)
        if checked.failures or self.state is None:
            return checked, None
        self.calls.append("diff")
        return checked, self.server.diff(self.state.id, self.urn, self.state.outputs, checked.inputs)

    def up(self, inputs: Mapping[str, Any], timeout: float | None = None) -> StateEntry:
        checked, diff = self.preview(inputs)
        if checked.failures:
            raise CheckFailedError(checked.failures)
        _, secret = self._plain(inputs)
        if self.state is None:
            self.calls.append("create")
            id_, outs = self.server.create(self.urn, checked.inputs, timeout)
            self.state = StateEntry(id_, checked.inputs, outs, secret)
        elif diff is not None and diff.changes == "some" and diff.replaces:
            if diff.delete_before_replace:
                self.calls.append("delete")
                self.server.delete(self.urn, self.state, timeout)
                self.state = None
                self.calls.append("create")
                id_, outs = self.server.create(self.urn, checked.inputs, timeout)
            else:
                old = self.state
                self.calls.append("create")
                id_, outs = self.server.create(self.urn, checked.inputs, timeout)
                self.calls.append("delete")
                self.server.delete(self.urn, old, timeout)
            self.state = StateEntry(id_, checked.inputs, outs, secret)
        elif diff is not None and diff.changes != "none":
            self.calls.append("update")
            outs = self.server.update(self.state.id, self.urn, self.state.outputs, checked.inputs, timeout)
            self.state = StateEntry(self.state.id, checked.inputs, outs, secret)
        return self.state

    def refresh(self, timeout: float | None = None) -> StateEntry | None:
        assert self.state is not None
        self.calls.append("read")
        id_, outs, inputs = self.server.read(self.urn, self.state, timeout)
        if not id_:
            self.state = None
            return None
        self.state = StateEntry(id_, inputs if inputs is not None else self.state.inputs, outs, self.state.secret_keys)
        return self.state

    def destroy(self, timeout: float | None = None) -> None:
        if self.state is None:
            return
        self.calls.append("delete")
        self.server.delete(self.urn, self.state, timeout)
        self.state = None


class CheckFailedError(Exception):
    def __init__(self, failures: list[tuple[str, str]]):
        super().__init__("; ".join(f"{prop}: {reason}" for prop, reason in failures))
        self.failures = failures
