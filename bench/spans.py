"""One CLI run's provider calls on a timeline, from the spans the CLI wrote (`--otel-traces
file://...`; bench/engine.py keeps them with PE_BENCH_TRACES=<dir>):

    .venv/bin/python -m bench.spans <otel-file.json>

Each Check, Diff, Create, Update, Delete and Read the engine sent the dynamic provider:
when it began (seconds from the first span), how long it took, and how many provider calls
were in flight when it began. The SDK's provider server runs at most 4 calls at once
(../shared/facts/pulumi-dynamic.md) and the engine makes its Check calls one at a time,
so a Check that began with 4 or more calls outstanding (the engine's side of each call: sent,
no answer yet) waited for a free thread, and every registration behind it waited too: the
summary adds those up.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

CALLS = ("Check", "Diff", "Create", "Update", "Delete", "Read")
PROVIDER_THREADS = 4  # pulumi/dynamic/__main__.py: grpc.server(ThreadPoolExecutor(max_workers=4))


@dataclass(frozen=True)
class Span:
    name: str
    start: float  # seconds (Unix)
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def read_spans(path: Path) -> list[Span]:
    """The spans of an OTLP JSON file (one JSON object a line) as the CLI writes it."""
    spans = []
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.strip():
            continue
        for resource in json.loads(line).get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                for s in scope.get("spans", []):
                    spans.append(Span(s["name"], int(s["startTimeUnixNano"]) / 1e9, int(s["endTimeUnixNano"]) / 1e9))
    return sorted(spans, key=lambda s: s.start)


@dataclass(frozen=True)
class Call:
    method: str
    start: float  # seconds from the run's first span
    seconds: float
    in_flight: int  # provider calls the engine had sent and not yet heard back from when this one began


PREFIX = "pulumirpc.ResourceProvider/"


def _provider_spans(spans: list[Span]) -> list[Span]:
    """The spans of the calls in CALLS, in the order they began."""
    return sorted(
        (s for s in spans if s.name.startswith(PREFIX) and s.name[len(PREFIX) :] in CALLS), key=lambda s: s.start
    )


def provider_calls(spans: list[Span]) -> list[Call]:
    """The run's provider calls in the order they began."""
    calls = _provider_spans(spans)
    t0 = min((s.start for s in spans), default=0.0)
    out = []
    for i, call in enumerate(calls):  # in the order sent: only calls sent before it are ahead of it
        in_flight = sum(1 for other in calls[:i] if call.start < other.end)
        out.append(Call(call.name[len(PREFIX) :], call.start - t0, call.seconds, in_flight))
    return out


def phases(spans: list[Span], long: float = 20.0) -> list[tuple[str, float, float]]:
    """The run cut at its long provider calls (those of `long` s or more: CompileMasterBatch,
    InfraRefresh; long calls that overlap, as a scale-in's deletes waiting for one removal,
    are one phase), each a phase, and so is each stretch between them (the per-master
    calls), as (label, start, end) in the spans' own (Unix) seconds."""
    calls = _provider_spans(spans)
    if not calls:
        return []
    groups: list[list[Span]] = []
    for call in (c for c in calls if c.seconds >= long):
        if groups and call.start < max(c.end for c in groups[-1]):
            groups[-1].append(call)
        else:
            groups.append([call])
    out: list[tuple[str, float, float]] = []
    mark = calls[0].start
    for i, group in enumerate(groups, 1):
        start, end = group[0].start, max(c.end for c in group)
        if start > mark:
            out.append(("between", mark, start))
        methods = sorted({c.name[len(PREFIX) :] for c in group})
        out.append((f"long call {i} ({len(group)} x {'/'.join(methods)})", start, end))
        mark = end
    last = max(c.end for c in calls)
    if last > mark:
        out.append(("after", mark, last))
    return out


def queued_checks(calls: list[Call]) -> tuple[int, float]:
    """Checks that began with every provider thread taken, and their seconds in all."""
    waiting = [c for c in calls if c.method == "Check" and c.in_flight >= PROVIDER_THREADS]
    return len(waiting), sum(c.seconds for c in waiting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--min-seconds", type=float, default=0.0, help="leave out shorter calls")
    args = parser.parse_args()
    calls = provider_calls(read_spans(args.trace))
    print("| began (s) | call | seconds | in flight at its start |")
    print("|---|---|---|---|")
    for c in calls:
        if c.seconds >= args.min_seconds:
            print(f"| {c.start:.2f} | {c.method} | {c.seconds:.2f} | {c.in_flight} |")
    n, seconds = queued_checks(calls)
    checks = [c for c in calls if c.method == "Check"]
    print(
        f"{len(checks)} Check calls, {sum(c.seconds for c in checks):.2f} s in all; {n} began with "
        f"{PROVIDER_THREADS}+ calls in flight ({seconds:.2f} s)"
    )


if __name__ == "__main__":
    main()
