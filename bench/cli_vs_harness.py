"""The same 0 -> N -> 1 -> 0 run of the lab stack through the real Pulumi CLI and through
the harness (tests/harness/graph.py), side by side: the steps each took, in order, and the
wall time of each `up`. The harness is the engine's stand-in for fast tests; this shows
what the real engine adds (CLI and plugin start, Check/Diff over gRPC from Go, a state
checkpoint per step).

    .venv/bin/python -m bench.cli_vs_harness [--masters 2] [--knobs install=8,...]

Prints a table; asserts nothing. Needs the lab up (`make lab`); uses compile02.. and the
lab's default profile, and leaves those hosts bare.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.scale_out import DEFAULT_KNOBS, bench_lab
from components.program import main as program
from lab.client import LabClient
from lab.deploy import Lab
from tests.cli_stack import CliStack
from tests.harness.graph import GraphRun
from tests.harness.mocks import run_program
from tests.harness.provider_server import ProviderServer
from tests.labtests.helpers import bare_masters, lab_stack_config, lab_stack_values

STACK = "compare"


def shape(masters: int) -> list[tuple[str, ...]]:
    hosts = tuple(f"compile{i:02d}" for i in range(2, 2 + masters))
    return [hosts, hosts[:1], ()]


def through_cli(client: LabClient, masters: int, workdir: Path) -> list[tuple[str, float, list[tuple[str, str]]]]:
    out = []
    stack = CliStack(STACK, workdir, lab_stack_values(client, ()))
    for hosts in shape(masters):
        stack.set_config(lab_stack_values(client, hosts))
        start = time.monotonic()
        run = stack.up()
        out.append((f"{len(hosts)} masters", time.monotonic() - start, run.steps()))
    stack.destroy()
    return out


def through_harness(client: LabClient, masters: int) -> list[tuple[str, float, list[tuple[str, str]]]]:
    out = []
    with ProviderServer() as server:
        run = GraphRun(server)
        for hosts in shape(masters):
            mark = len(run.log)
            start = time.monotonic()
            run.up(run_program(program, stack=STACK, config=lab_stack_config(client, hosts)))
            out.append((f"{len(hosts)} masters", time.monotonic() - start, run.operations(mark)))
        run.destroy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=2)
    parser.add_argument("--knobs", default="", help="latency knobs, e.g. install=8,master_run=8 (default: the bench's)")
    args = parser.parse_args()
    knobs = dict(DEFAULT_KNOBS)
    for pair in filter(None, args.knobs.split(",")):
        key, _, value = pair.partition("=")
        knobs[key] = float(value)
    lab, client = Lab(), LabClient()
    hosts = shape(args.masters)[0]
    with bench_lab(lab, knobs), tempfile.TemporaryDirectory() as tmp:
        bare_masters(client, hosts)
        harness = through_harness(client, args.masters)
        bare_masters(client, hosts)
        cli = through_cli(client, args.masters, Path(tmp))
        bare_masters(client, hosts)
    print(f"knobs: {knobs}")
    print(f"{'up':<12} {'real CLI s':>10} {'harness s':>10} {'ratio':>6}")
    for (label, cli_s, _), (_, harness_s, _) in zip(cli, harness, strict=True):
        print(f"{'-> ' + label:<12} {cli_s:>10.1f} {harness_s:>10.1f} {cli_s / harness_s:>6.2f}")
    for (label, _, cli_steps), (_, _, harness_steps) in zip(cli, harness, strict=True):
        print(f"\nsteps of the up to {label} (real CLI | harness), in the order each began them:")
        width = max((len(f"{op} {name}") for op, name in cli_steps), default=10)
        for i in range(max(len(cli_steps), len(harness_steps))):
            left = " ".join(cli_steps[i]) if i < len(cli_steps) else ""
            right = " ".join(harness_steps[i]) if i < len(harness_steps) else ""
            print(f"  {left:<{width}} | {right}")


if __name__ == "__main__":
    main()
