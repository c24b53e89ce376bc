"""Issue 29's figures through the real Pulumi CLI (scripts/pulumi: the built CLI, the program
served in-process, the dynamic provider plugin): adding and removing N masters with
`pulumi up`, PE's procedure by hand for the largest N in the same run (bench/by_hand.py:
the floor), the harness's `up` of the largest N beside it, and the no-change `preview` and
`up` of a 50-master deployment.

    .venv/bin/python -m bench.engine [--sizes 1,16] [--knobs install=60,...] [--preview-masters 50]
                                     [--no-by-hand] [--no-harness]

The split of each CLI run comes from the CLI's own OpenTelemetry spans (`--otel-traces
file://...`): the Go CLI from start to exit, up to its state read (config, secrets
manager, backend), the state read, the dynamic plugin's start, Check and Diff calls, and
the state checkpoints (blob writes); each `up` is also cut into phases at its long provider
calls (bench/spans.py), with the machine's CPU in each. PE_BENCH_TRACES=<dir> keeps each
run's spans (`python -m bench.spans <file>` prints its provider calls on a timeline). CPU:
the machine's busy CPU-s during the run (the sampler's share left out) and the Pulumi
side's processes, sampled (bench/cpu.py).

The 50-master state is written by the real CLI with every provider's create answering
at once with a healthy status (bench/seed/sitecustomize.py, PE_BENCH_SEED=1: no host is
touched); the timed commands then run with the real provider and no seeding.

Prints tables; asserts nothing (the machines are shared and noisy: read the ratios).
Needs the lab up (`make lab`), PE 2019.7+ profile for the by-hand floor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import by_hand, cpu
from bench.scale_out import (
    PE_LIKE_KNOBS,
    TRACE,
    Row,
    _machine,
    bench_lab,
    fake_deployment,
    print_purpose_rows,
    scale_out,
)
from bench.spans import PROVIDER_THREADS, Span, phases, provider_calls, queued_checks, read_spans
from lab.client import LabClient
from lab.deploy import Lab
from tests.cli_stack import CliRun, CliStack
from tests.labtests.helpers import bare_masters, lab_stack_values

STACK = "engine"
SEED_DIR = Path(__file__).resolve().parent / "seed"
NO_CHANGE_RUNS = 3


@dataclass
class Split:
    """Where one CLI run's time went, from its spans (seconds)."""

    wall: float  # measured here: scripts/pulumi's start to its exit (Python program host included)
    cli: float = 0.0  # the Go CLI's own `pulumi` span
    before_state: float = 0.0  # Go CLI start to its state read (config, secrets manager, backend)
    state_read: float = 0.0
    plugin_start: float = 0.0
    checks: int = 0
    check_seconds: float = 0.0
    diffs: int = 0
    diff_seconds: float = 0.0
    checkpoints: int = 0  # state writes (blob writers opened)
    checkpoint_seconds: float = 0.0  # their spans (writers and backup copies)
    queued: int = 0  # Check calls that began with every provider thread taken (bench/spans.py)
    queued_seconds: float = 0.0

    @classmethod
    def of(cls, spans: list[Span], wall: float) -> Split:
        def named(name: str) -> list[Span]:
            return [s for s in spans if s.name == name]

        top = named("pulumi")
        reads = named("diyBackend.getSnapshot")
        out = cls(wall)
        if top:
            out.cli = top[0].seconds
            out.before_state = (reads[0].start if reads else top[0].end) - top[0].start
        out.state_read = sum(s.seconds for s in reads + named("stack.DeserializeDeploymentV3"))
        out.plugin_start = sum(s.seconds for s in named("newPlugin"))
        checks, diffs = named("pulumirpc.ResourceProvider/Check"), named("pulumirpc.ResourceProvider/Diff")
        out.checks, out.check_seconds = len(checks), sum(s.seconds for s in checks)
        out.diffs, out.diff_seconds = len(diffs), sum(s.seconds for s in diffs)
        writes = named("gocloud.dev/blob.NewWriter")
        out.checkpoints = len(writes)
        out.checkpoint_seconds = sum(s.seconds for s in writes + named("gocloud.dev/blob.Copy"))
        out.queued, out.queued_seconds = queued_checks(provider_calls(spans))
        return out

    def line(self) -> str:
        return (
            f"wall {self.wall:.2f} s: Go CLI {self.cli:.2f} (start to state read {self.before_state:.2f}, "
            f"state read {self.state_read:.3f}, plugin start {self.plugin_start:.2f}, "
            f"{self.checks} Check {self.check_seconds:.2f} ({self.queued} began with {PROVIDER_THREADS}+ calls in "
            f"flight: {self.queued_seconds:.2f}), {self.diffs} Diff {self.diff_seconds:.2f}, "
            f"{self.checkpoints} checkpoints {self.checkpoint_seconds:.3f}); "
            f"outside the Go CLI (program host start, scripts/pulumi) {self.wall - self.cli:.2f}"
        )


@dataclass
class Timed:
    """One CLI command, timed and sampled."""

    run: CliRun
    split: Split
    cpu_seconds: float  # the machine's busy CPU-s (the sampler's own left out)
    engine_cpu: dict[str, float] = field(default_factory=dict)  # Pulumi-side processes' CPU-s
    purposes: dict[str, float] = field(default_factory=dict)  # compile hosts' CPU-s by purpose
    roles: dict[str, float] = field(default_factory=dict)  # by lab host role (bench/cpu.py)
    state_bytes: int = 0
    remote: int = 0  # SSH connections the provider opened
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # (label, wall s, machine CPU-s)


def timed(stack: CliStack, command: str, *args: str, sample_into: Path | None) -> Timed:
    """The command through the CLI with its spans; sampled into `sample_into` (None: not
    sampled - a sampler scanning /proc competes for the cores with a CPU-bound 2 s run)."""
    kept = os.environ.get("PE_BENCH_TRACES")  # a directory: keep each run's spans there to read
    trace = (Path(kept) if kept else stack.workdir) / f"otel-{command}-{time.monotonic_ns()}.json"
    busy0, roles0 = cpu.machine_busy_seconds(), cpu.snapshot() if sample_into else {}
    t0, unix0 = time.monotonic(), time.time()
    with cpu.sampling(sample_into) if sample_into else contextlib.nullcontext(cpu.Sampled()) as sampled:
        run = stack.cli(command, *args, "--otel-traces", f"file://{trace}")
    wall = time.monotonic() - t0
    busy = cpu.machine_busy_seconds() - busy0 - sampled.own_cpu
    roles = cpu.spent(roles0, cpu.snapshot()) if sample_into else {}
    states = sorted((stack.workdir / "state" / ".pulumi" / "stacks").glob(f"*/{stack.name}.json"))
    spans = read_spans(trace)
    to_monotonic = t0 - unix0  # span times are Unix seconds; the sampler's are monotonic
    return Timed(
        run,
        Split.of(spans, wall),
        busy,
        sampled.engine,
        sampled.purposes,
        roles,
        states[0].stat().st_size if states else 0,
        len(re.findall(r"\[trace\] ssh-connect", run.text)),
        [
            (label, end - start, sampled.work_between(start + to_monotonic, end + to_monotonic))
            for label, start, end in phases(spans)
        ]
        if sample_into
        else [],
    )


def engine_share(t: Timed) -> float:
    """The Pulumi engine's own CPU-s: the Go CLI and the program's host (not the provider)."""
    return sum(v for k, v in t.engine_cpu.items() if not k.startswith("provider server"))


@dataclass
class Scale:
    n: int
    out: Timed
    scale_in: Timed


def scale(client: LabClient, stack: CliStack, n: int, sample_into: Path) -> Scale:
    shorts = [f"compile{i:02d}" for i in range(1, n + 1)]
    bare_masters(client, shorts)
    stack.set_config(lab_stack_values(client, shorts))
    out = timed(stack, "up", "--yes", "--skip-preview", sample_into=sample_into)
    stack.set_config(lab_stack_values(client, []))
    scale_in = timed(stack, "up", "--yes", "--skip-preview", sample_into=sample_into)
    bare_masters(client, shorts)
    return Scale(n, out, scale_in)


@dataclass
class NoChange:
    masters: int
    resources: int
    previews: list[Timed]
    ups: list[Timed]


def median(runs: Sequence[Timed]) -> Timed:
    return sorted(runs, key=lambda t: t.split.wall)[len(runs) // 2]


def no_change(client: LabClient, masters: int, workdir: Path) -> NoChange:
    """A `masters`-master state written through the CLI with seeded creates, then the real
    provider's no-change preview and up, NO_CHANGE_RUNS times each."""
    seeded = {**TRACE, "PE_BENCH_SEED": "1", "PYTHONPATH": str(SEED_DIR)}
    stack = CliStack(f"{STACK}-nochange", workdir, fake_deployment(client, masters), env=seeded)
    stack.up()
    for key in ("PE_BENCH_SEED", "PYTHONPATH"):
        stack.env.pop(key, None)
    previews = [timed(stack, "preview", "--expect-no-changes", sample_into=None) for _ in range(NO_CHANGE_RUNS)]
    ups = [
        timed(stack, "up", "--yes", "--skip-preview", "--expect-no-changes", sample_into=None)
        for _ in range(NO_CHANGE_RUNS)
    ]
    resources = len(stack.export()["deployment"].get("resources") or [])
    return NoChange(masters, resources, previews, ups)  # the state is dropped with workdir: nothing to delete


def floor_previews(resources: int, workdir: Path) -> list[float]:
    """The CLI's and the SDK's own floor for a no-change preview of `resources` dynamic
    resources: the engine tests' small program (tests/engine/cli_program.py, one input each,
    a provider whose check and diff do nothing), NO_CHANGE_RUNS walls."""
    (workdir / "journal").parent.mkdir(parents=True, exist_ok=True)
    (workdir / "journal").write_text("")
    config = {
        "t:journal": str(workdir / "journal"),
        "t:resources": [{"name": f"r{i}", "A": "a"} for i in range(resources)],
        "t:files": [],
    }
    stack = CliStack(f"{STACK}-floor", workdir, config, program="tests.engine.cli_program:program")
    stack.up()
    walls = []
    for _ in range(NO_CHANGE_RUNS):
        t0 = time.monotonic()
        stack.preview("--expect-no-changes")
        walls.append(time.monotonic() - t0)
    return walls


def cpu_table(rows: list[tuple[str, dict[str, float], float, int]]) -> None:
    """CPU-s per added master by lab host role and process kind, plus the Pulumi side:
    rows of (label, CPU-s by role, the machine's busy CPU-s, masters added)."""
    print("| host: process | " + " | ".join(label for label, _, _, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    merged = [
        {k: v for k, v in roles.items() if not k.startswith(("bench harness", "other"))} for _, roles, _, _ in rows
    ]
    keys = sorted({k for m in merged for k in m}, key=lambda k: -max(m.get(k, 0.0) for m in merged))
    for key in keys:
        if max(m.get(key, 0.0) / n for m, (_, _, _, n) in zip(merged, rows, strict=True)) < 0.05:
            continue
        cells = [f"{m.get(key, 0.0) / n:.2f}" for m, (_, _, _, n) in zip(merged, rows, strict=True)]
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("| machine, all (busy CPU-s per master) | " + " | ".join(f"{busy / n:.2f}" for _, _, busy, n in rows) + " |")


def cpu_row(label: str, t: Timed, n: int) -> tuple[str, dict[str, float], float, int]:
    return label, {**t.roles, **{f"[sampled] {k}": v for k, v in t.engine_cpu.items()}}, t.cpu_seconds, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,16")
    parser.add_argument("--knobs", default=",".join(f"{k}={v:g}" for k, v in PE_LIKE_KNOBS.items()))
    parser.add_argument("--preview-masters", type=int, default=50)
    parser.add_argument("--no-by-hand", action="store_true", help="skip PE's procedure by hand (the floor)")
    parser.add_argument("--no-harness", action="store_true", help="skip the harness's up of the largest N")
    parser.add_argument("--no-change-only", action="store_true", help="only the no-change runs and their floor")
    args = parser.parse_args()
    knobs = {k: float(v) for k, v in (pair.split("=") for pair in args.knobs.split(","))}
    sizes = [int(s) for s in args.sizes.split(",")]
    lab = Lab()
    client = LabClient(lab.root)
    with tempfile.TemporaryDirectory() as tmp:
        quiet = no_change(client, args.preview_masters, Path(tmp) / "nochange")
        print(f"no-change preview of {args.preview_masters} masters: {median(quiet.previews).split.line()}", flush=True)
        custom = sum(1 for t in quiet.previews[:1] for _ in range(t.split.checks))
        floor = floor_previews(custom, Path(tmp) / "floor")
        print(f"no-change preview of {custom} trivial dynamic resources: {', '.join(f'{w:.2f}' for w in floor)} s")
        if args.no_change_only:
            return
        scales: list[Scale] = []
        hands: list[by_hand.ByHand] = []
        harness: Row | None = None
        with bench_lab(lab, knobs):
            stack = CliStack(STACK, Path(tmp) / "stack", lab_stack_values(client, []), env=TRACE)
            stack.up()  # the deployment's own resources (no master): not timed
            sample_into = Path(client.root) / "state" / "bench-purposes.json"
            try:
                for n in sizes:
                    scales.append(scale(client, stack, n, sample_into))
                    s = scales[-1]
                    print(f"N={n}: up {s.out.split.wall:.1f} s, scale-in {s.scale_in.split.wall:.1f} s", flush=True)
            finally:
                stack.destroy(check=False)
            if not args.no_by_hand and client.profile.pe_version >= (2019, 7):
                hands.append(by_hand.run(client, sizes[-1], Path(client.root) / "state"))
                by_hand.undo(client, sizes[-1])
                print(f"by hand N={sizes[-1]}: {hands[-1].seconds:.1f} s", flush=True)
            if not args.no_harness:
                harness = scale_out(client, sizes[-1])
                print(f"harness N={sizes[-1]}: up {harness.seconds:.1f} s", flush=True)
    report(client, knobs, scales, hands, harness, quiet)


def report(
    client: LabClient,
    knobs: dict[str, float],
    scales: list[Scale],
    hands: list[by_hand.ByHand],
    harness: Row | None,
    quiet: NoChange,
) -> None:
    first, last = scales[0], scales[-1]
    print()
    print(f"knobs: {json.dumps(knobs)}; machine: {_machine()}; lab profile: {client.profile.label}")
    print()
    print("| `pulumi up` through the real CLI | wall (s) | machine CPU-s | CPU-s per master | Pulumi engine CPU-s "
          "(Go CLI + program host) | provider server CPU-s | state file (KiB) | checkpoints (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for s in scales:
        for label, t in ((f"add {s.n}", s.out), (f"remove {s.n}", s.scale_in)):
            provider = sum(v for k, v in t.engine_cpu.items() if k.startswith("provider server"))
            print(
                f"| {label} | {t.split.wall:.1f} | {t.cpu_seconds:.0f} | {t.cpu_seconds / s.n:.1f} | "
                f"{engine_share(t):.1f} | {provider:.1f} | {t.state_bytes / 1024:.0f} | "
                f"{t.split.checkpoints} ({t.split.checkpoint_seconds:.2f}) |"
            )
    for h in hands:
        per_compiler = h.cpu_seconds / h.n
        print(f"| PE's procedure by hand, add {h.n} | {h.seconds:.1f} | {h.cpu_seconds:.0f} | {per_compiler:.1f} "
              "| - | - | - | - |")  # fmt: skip
    if harness is not None:
        print(
            f"| the harness (tests/harness), add {harness.n} | {harness.seconds:.1f} | {harness.cpu_seconds:.0f} | "
            f"{harness.cpu_seconds / harness.n:.1f} | - | {harness.provider_cpu:.1f} | - | - |"
        )
    print()
    print(
        "Phases of each `up` (cut at its long provider calls, bench/spans.py) and by hand's steps "
        "(wall s, machine CPU-s):"
    )
    for s in scales:
        for label, t in ((f"add {s.n}", s.out), (f"remove {s.n}", s.scale_in)):
            print(f"- {label}: " + "; ".join(f"{name} {w:.1f} s, {c:.0f} CPU-s" for name, w, c in t.phases))
    for h in hands:
        print(
            f"- by hand {h.n}: "
            + "; ".join(f"{step} {t:.1f} s, {h.step_cpu.get(step, 0.0):.0f} CPU-s" for step, t in h.steps.items())
        )
    print()
    print("Where the CPU goes during `up` (CPU-s per added master; bench/cpu.py; [sampled]: the Pulumi side):")
    cpu_table(
        [
            *(cpu_row(f"add {s.n}", s.out, s.n) for s in scales),
            *((f"by hand {h.n}", h.roles, h.cpu_seconds, h.n) for h in hands),
        ]
    )
    print()
    print("What the compile hosts' CPU buys, CPU-s per added master (sampled every 0.2 s by bench/cpu.py):")
    print_purpose_rows([*((s.n, s.out.purposes) for s in scales), *((h.n, h.purposes) for h in hands)])
    if hands:
        print(f"(the last column: PE's procedure by hand, N={hands[-1].n})")
    print()
    print("The engine's split of each `up` (its OpenTelemetry spans):")
    for s in scales:
        print(f"- add {s.n}: {s.out.split.line()}")
        print(f"- remove {s.n}: {s.scale_in.split.line()}")
    preview, up = median(quiet.previews), median(quiet.ups)
    print()
    print(f"No-change runs of a {quiet.masters}-master deployment ({quiet.resources} resources in the state), "
          f"median of {NO_CHANGE_RUNS} (walls: previews {', '.join(f'{t.split.wall:.2f}' for t in quiet.previews)}; "
          f"ups {', '.join(f'{t.split.wall:.2f}' for t in quiet.ups)}):")  # fmt: skip
    print(f"- preview: {preview.split.line()}; {preview.remote} remote connections")
    print(f"- up: {up.split.line()}; {up.remote} remote connections")
    print()
    hand = hands[-1] if hands else None
    wall = (
        f"{last.out.split.wall / hand.seconds:.2f} ({last.out.split.wall:.0f} / {hand.seconds:.0f} s)" if hand else "-"
    )
    per = (
        f"{(last.out.cpu_seconds / last.n) / (hand.cpu_seconds / hand.n):.2f} "
        f"({last.out.cpu_seconds / last.n:.1f} / {hand.cpu_seconds / hand.n:.1f})"
        if hand
        else "-"
    )
    engine = engine_share(last.out)
    goals = [
        (f"1. `pulumi up` adding {last.n} / by hand {last.n}, wall", wall, "<= 1.05"),
        ("2. machine CPU-s per added master / by hand's", per, "<= 1.10"),
        (
            f"3. no-change `pulumi preview` of {quiet.masters} masters, wall (start to exit)",
            f"{preview.split.wall:.2f} s, {preview.remote} remote connections (up: {up.split.wall:.2f} s, {up.remote})",
            "<= 2.0 s, 0",
        ),
        (
            f"4. removing {last.n} / removing {first.n}",
            f"{last.scale_in.split.wall / first.scale_in.split.wall:.2f} "
            f"({last.scale_in.split.wall:.0f} / {first.scale_in.split.wall:.0f} s)",
            "<= 2",
        ),
        (
            f"5. the engine's own CPU at N={last.n} / the up's machine CPU",
            f"{engine / last.out.cpu_seconds:.3f} ({engine:.1f} / {last.out.cpu_seconds:.0f} CPU-s; state "
            f"{last.out.state_bytes / 1024:.0f} KiB, {last.out.split.checkpoints} checkpoints in "
            f"{last.out.split.checkpoint_seconds:.2f} s)",
            "<= 0.05",
        ),
        ("6. `make test`", "printed by .ci/run (`ci: make test took`)", "<= 45 min"),
    ]
    pe_like = knobs == PE_LIKE_KNOBS
    print("| goal (issue 29) | this run | target |")
    print("|---|---|---|")
    for goal, figure, target in goals:
        note = "" if pe_like or not goal.startswith(("1.", "2.")) else " (not PE-like knobs: not the goal's setting)"
        print(f"| {goal} | {figure}{note} | {target} |")


if __name__ == "__main__":
    main()
