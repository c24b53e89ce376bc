"""Scale-out and scale-in benchmark: N compile masters added to the lab's stack config, then
all N removed from it, driven the way the engine drives the program (tests/harness/graph.py:
the engine's rules and default parallelism, the SDK's own provider server with its 4-call
limit), plus a no-change preview of 50 masters, then PE's procedure by hand for the
smallest and largest N on the same hosts (bench/by_hand.py: the floors of issue 16's goals).

    .venv/bin/python -m bench.scale_out [--sizes 1,4,16] [--knobs install=8,master_run=8,...] [--no-by-hand]

Prints a table; asserts nothing (the machines are shared and noisy: read the ratios).
Needs the lab up (`make lab`). It sets the latency knobs and makes every compile host use
the light compile service while it runs, and restores both at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import by_hand, cpu
from bench.healthy import healthy_outputs
from components.program import main as program
from lab.client import LabClient
from lab.config import roster
from lab.deploy import Lab
from tests.harness.graph import GraphRun
from tests.harness.mocks import run_program
from tests.harness.provider_server import ProviderServer
from tests.labtests.helpers import bare_masters, lab_stack_config, lab_stack_values

STACK = "bench"
DEFAULT_KNOBS = {"install": 8.0, "master_run": 8.0, "puppetdb_run": 4.0, "console_run": 4.0}
TRACE = {"PE_COMPILE_MASTERS_TRACE": "1"}


@dataclass
class Row:
    n: int
    seconds: float
    puppetdb_runs: int
    console_runs: int
    ssh_per_master: float
    peak_mib: float
    scale_in_seconds: float  # `up` with every master removed from the config (drain, unpin, revoke, uninstall)
    scale_in_removals: int  # master removals that ran in the first delete call's group (the rest: alone)
    scale_in_phases: dict[str, tuple[float, float, int]]
    destroy_seconds: float  # `destroy` of what is left (batch, refresh, admission: no master)
    cpu_seconds: float  # busy CPU time of the whole machine (every lab host, the provider) during `up`
    phases: dict[str, tuple[float, float, int]]  # kind -> (first start, last end) in s from the up's start, count
    provider_cpu: float  # CPU-seconds of the provider server process during `up`
    primary_cpu: float  # CPU-seconds of the primary's Puppet Server (CA, catalog compiles) during `up`
    cpu_roles: dict[str, float]  # CPU-seconds during `up` by lab host role and process kind (bench/cpu.py)
    purposes: dict[str, float]  # compile hosts' CPU-seconds during `up` by what the command is for (cpu.sample)
    sampler_cpu: float  # the sampler's own CPU-seconds, left out of cpu_seconds
    batch_cpu: float  # the machine's busy CPU-seconds while the CompileMasterBatch ran (sampler's share left out)


# Resource kinds of the program, by name suffix, in the order an `up` reaches them.
PHASES = (
    ("-provisioning", "CompileMasterBatch (install, sign, runs: all masters)"),
    ("-code", "FileSync (per master)"),
    ("-master", "PeCompileMaster verify (per master)"),
    ("-infra-refresh", "InfraRefresh (PuppetDB, then console)"),
    ("-pool-admission", "PoolAdmission (adds + health gate: all members)"),
    ("-pool", "PoolMember confirm (per master)"),
)


# ... and the order a scale-in reaches them: updates first, then deletes, dependents first.
SCALE_IN_PHASES = (
    ("-provisioning", "CompileMasterBatch update (records who leaves)"),
    ("-infra-refresh", "InfraRefresh update (PuppetDB, then console)"),
    ("-pool-admission", "PoolAdmission update"),
    ("-pool", "PoolMember delete (drain, remove: per master)"),
    ("-master", "PeCompileMaster delete (the first removes the group)"),
    ("-code", "FileSync delete (per master)"),
)


def phases(
    timeline: list[tuple[str, float, float]], t0: float, kinds: tuple[tuple[str, str], ...] = PHASES
) -> dict[str, tuple[float, float, int]]:
    out = {}
    for suffix, _ in kinds:
        spans = [(start, end) for name, start, end in timeline if name.endswith(suffix)]
        if spans:
            out[suffix] = (min(s for s, _ in spans) - t0, max(e for _, e in spans) - t0, len(spans))
    return out


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def puppetserver_cpu_seconds() -> float:
    """CPU-seconds of every Puppet Server JVM on the machine (the bench runs only the
    primary's: compile hosts use the light compile service)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if "(java)" in stat.read_text() and "puppetserver" in (stat.parent / "cmdline").read_text():
                total += process_cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # a process that ended meanwhile
    return total


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def bench_lab(lab: Lab, knobs: dict[str, float]) -> Iterator[None]:
    """Knobs on, light compile services everywhere (16 JVMs do not fit 2 cores); restored after."""
    before = lab.settings()
    changed = lab.settings()
    changed.knobs.update(knobs)
    changed.real_compile_hosts = []
    lab.save_settings(changed)
    try:
        yield
    finally:
        lab.save_settings(before)


def scale_out(client: LabClient, n: int) -> Row:
    shorts = [f"compile{i:02d}" for i in range(1, n + 1)]
    bare_masters(client, shorts)
    with ProviderServer(env=TRACE) as server:
        run = GraphRun(server)
        mocks = run_program(program, stack=STACK, config=lab_stack_config(client, shorts))
        t0, busy0, primary0 = time.monotonic(), cpu.machine_busy_seconds(), puppetserver_cpu_seconds()
        provider0 = process_cpu_seconds(server.pid)
        roles0 = cpu.snapshot()
        with cpu.sampling(Path(client.root) / "state" / "bench-purposes.json") as sampled:
            run.up(mocks)
        seconds = time.monotonic() - t0
        roles = cpu.spent(roles0, cpu.snapshot())
        spans = phases(run.timeline, t0)
        cpu_seconds = cpu.machine_busy_seconds() - busy0 - sampled.own_cpu  # the product's and the lab's
        batch_start, batch_end, _ = spans.get("-provisioning", (0.0, 0.0, 0))
        batch_cpu = sampled.busy_between(t0 + batch_start, t0 + batch_end)
        batch_cpu -= sampled.own_cpu * (batch_end - batch_start) / seconds
        provider_cpu = process_cpu_seconds(server.pid) - provider0
        primary_cpu = puppetserver_cpu_seconds() - primary0
        text = server.text()
        addresses = {client.host(s).address for s in shorts}
        connects = re.findall(r"\[trace\] ssh-connect (\S+)", text)
        per_master = sum(1 for a in connects if a in addresses) / n
        peak = peak_rss_mib(server.pid)
        before, steps_before = len(server.text()), len(run.timeline)
        t1 = time.monotonic()
        run.up(run_program(program, stack=STACK, config=lab_stack_config(client, [])))  # scale-in: all leave
        scale_in_seconds = time.monotonic() - t1
        scale_in_spans = phases(run.timeline[steps_before:], t1, SCALE_IN_PHASES)
        grouped = re.findall(r"delete: removing (\d+) masters leaving the stack", server.text()[before:])
        t2 = time.monotonic()
        run.destroy()
        destroy_seconds = time.monotonic() - t2
    return Row(
        n,
        seconds,
        text.count(f"[{STACK}-infra-refresh] PuppetDB run: done"),
        text.count(f"[{STACK}-infra-refresh] console run: done"),
        per_master,
        peak,
        scale_in_seconds,
        max((int(g) for g in grouped), default=1),
        scale_in_spans,
        destroy_seconds,
        cpu_seconds,
        spans,
        provider_cpu,
        primary_cpu,
        roles,
        sampled.purposes,
        sampled.own_cpu,
        batch_cpu,
    )


@dataclass
class Preview:
    seconds: float  # wall time of the harness's preview (Python stands in for the engine's Go)
    rpc_seconds: float  # of which in gRPC calls to the provider server: what the engine waits for
    remote: int  # SSH connections the provider opened
    resources: int
    changed: int


PREVIEW_RUNS = 5


def rpc_of(preview: Preview) -> float:
    return preview.rpc_seconds


def fake_deployment(client: LabClient, masters: int) -> dict[str, Any]:
    """The lab stack's config with `masters` masters the lab has no hosts for (m001..,
    127.0.11.x, host keys pinned in a known_hosts file of their own): for no-change previews
    of a state that says all is well, which touch no host."""
    fake = [
        {"certname": f"m{i:03d}.pelab.test", "address": f"127.0.11.{i}", "dnsAltNames": [f"m{i:03d}"]}
        for i in range(1, masters + 1)
    ]
    known = Path(client.known_hosts).read_text()
    key = known.splitlines()[0].split()[1:3]
    extra = "".join(f"{m['certname']},{m['address']} {' '.join(key)}\n" for m in fake)
    hosts_file = Path(client.root) / "state" / "bench-known-hosts"
    hosts_file.write_text(known + extra)
    return lab_stack_values(client, [], **{"pe:compileMasters": fake, "pe:knownHostsFile": str(hosts_file)})


def no_change_preview(client: LabClient, masters: int) -> Preview:
    """check + diff of every resource of a `masters`-master stack whose state says all is
    well, through a fresh provider server (its first call imports the provider's modules,
    as it does under the engine)."""
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fake_deployment(client, masters).items()}
    mocks = run_program(program, stack=STACK, config=config)
    with ProviderServer(env=TRACE) as server:
        run = GraphRun(server)
        run.seed(mocks, healthy_outputs)
        t0 = time.monotonic()
        plan = run.preview(mocks)  # Check and Diff one resource at a time, as the engine does
        seconds = time.monotonic() - t0
        remote = server.text().count("[trace] ssh-connect")
        rpc = server.rpc_seconds.get("Check", 0.0) + server.rpc_seconds.get("Diff", 0.0)
    changed = sum(1 for op in plan.values() if op != "same")
    return Preview(seconds, rpc, remote, len(plan), changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--knobs", default=",".join(f"{k}={v:g}" for k, v in DEFAULT_KNOBS.items()))
    parser.add_argument("--preview-masters", type=int, default=50)
    parser.add_argument(
        "--no-by-hand", action="store_true", help="skip PE's procedure by hand (bench/by_hand.py), the floors"
    )
    args = parser.parse_args()
    knobs = {k: float(v) for k, v in (pair.split("=") for pair in args.knobs.split(","))}
    sizes = [int(s) for s in args.sizes.split(",")]
    if max(sizes) > sum(1 for h in roster() if h.role == "compile"):
        raise SystemExit("the lab has 16 compile hosts")
    lab = Lab()
    client = LabClient(lab.root)
    # quick, and needs no lab state; a shared machine's noise moves one run by +-30 %: the median of 5
    previews = sorted((no_change_preview(client, args.preview_masters) for _ in range(PREVIEW_RUNS)), key=rpc_of)
    preview = previews[len(previews) // 2]
    rows = []
    with bench_lab(lab, knobs):
        for n in sizes:
            rows.append(scale_out(client, n))
            spans = ", ".join(f"{k.strip('-')} {a:.1f}-{b:.1f}" for k, (a, b, _) in rows[-1].phases.items())
            print(f"N={n}: {rows[-1].seconds:.1f}s ({spans})", flush=True)
        hands = []
        if not args.no_by_hand and client.profile.pe_version >= (2019, 7):
            for n in sorted({sizes[0], sizes[-1]}):
                hands.append(by_hand.run(client, n, Path(client.root) / "state"))
                by_hand.undo(client, n)
                print(f"by hand N={n}: {hands[-1].seconds:.1f}s", flush=True)
    base = rows[0].seconds
    print()
    profile = client.profile
    print(f"knobs: {json.dumps(knobs)}; machine: {_machine()}; lab profile: {profile.label}")
    cores = os.cpu_count() or 1
    print(
        "| N | wall (s) | ratio to N=1 | PuppetDB runs | console runs | SSH conns/master | provider peak RSS MiB "
        f"| machine CPU-s | CPU-bound floor on {cores} cores (s) | CPU-s per master | provider CPU-s (all) | "
        "primary's Puppet Server CPU-s (all) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.n} | {r.seconds:.1f} | {r.seconds / base:.2f} | {r.puppetdb_runs} | {r.console_runs} | "
            f"{r.ssh_per_master:.1f} | {r.peak_mib:.0f} | {r.cpu_seconds:.0f} | {r.cpu_seconds / cores:.0f} | "
            f"{r.cpu_seconds / r.n:.1f} | {r.provider_cpu:.1f} | {r.primary_cpu:.1f} |"
        )
    print()
    print("Where the time goes (seconds from the start of `up`: first start - last end, resources):")
    print_phases(rows, PHASES, lambda r: r.phases)
    print()
    print("Where the machine's CPU goes during `up`, CPU-s per added master (bench/cpu.py; under 0.1 left out):")
    print("| host: process | " + " | ".join(f"N={r.n}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    last = rows[-1].cpu_roles
    shown = sorted({k for r in rows for k, v in r.cpu_roles.items() if v / r.n >= 0.1}, key=lambda k: -last.get(k, 0))
    for role in shown:
        print(f"| {role} | " + " | ".join(f"{r.cpu_roles.get(role, 0.0) / r.n:.1f}" for r in rows) + " |")
    print()
    print_purposes(rows)
    print()
    print(
        "| scale-in: N masters removed from the config | wall (s) | ratio to N=1 | largest group removed in one call "
        "| then `destroy` of the rest (s) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.n} | {r.scale_in_seconds:.1f} | {r.scale_in_seconds / rows[0].scale_in_seconds:.2f} | "
            f"{r.scale_in_removals} | {r.destroy_seconds:.1f} |"
        )
    print()
    print("Where the scale-in's time goes (seconds from its start: first start - last end, resources):")
    print_phases(rows, SCALE_IN_PHASES, lambda r: r.scale_in_phases)
    print()
    print(
        f"no-change preview of {args.preview_masters} masters (median of {PREVIEW_RUNS} fresh provider servers; "
        f"fastest {previews[0].rpc_seconds:.2f}s, slowest {previews[-1].rpc_seconds:.2f}s in the server): "
        f"{preview.resources} resources checked and diffed "
        f"one at a time in {preview.seconds:.2f}s, of which {preview.rpc_seconds:.2f}s in the provider server "
        f"(the rest is this harness serializing for it in Python); {preview.remote} remote connections, "
        f"{preview.changed} with changes"
    )
    print()
    print_by_hand(hands)
    print_goals(rows, knobs, preview, args.preview_masters, hands)


# The compile hosts' work PE's procedure itself asks for: the agent runs on the new master
# (PE's order: run the agent, pin, run it again - peadm's add_compiler runs it twice too),
# the agent service PE's installer leaves running (its start-up runs the agent once more),
# and the lab's install.bash stand-in (PE's installer, a package install on a real host).
PROCEDURE = (
    "agent runs in the foreground (first run, master run)",
    "the agent service's start-up (PE leaves it running)",
    "the agent service's own run at its start",
    "install.bash stand-in (lab)",
)


def print_purpose_rows(columns: list[tuple[int, dict[str, float]]]) -> None:
    """A table of compile-host CPU-s per master by purpose: one column per N, the largest N's
    biggest purposes first."""
    print("| command's purpose | " + " | ".join(f"N={n}" for n, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    last = columns[-1][1]
    for label in sorted(last, key=lambda k: -last[k]):
        print(f"| {label} | " + " | ".join(f"{p.get(label, 0.0) / n:.2f}" for n, p in columns) + " |")


def print_purposes(rows: list[Row]) -> None:
    """The compile hosts' share of the CPU table above, by what each command buys."""
    print(
        "What the compile hosts' CPU buys during `up`, CPU-s per added master (each process sampled every "
        f"0.2 s by bench/cpu.py; the sampler's own CPU, {rows[-1].sampler_cpu:.1f} s at N={rows[-1].n}, is "
        "left out of every figure):"
    )
    print_purpose_rows([(r.n, r.purposes) for r in rows])
    cells = []
    for r in rows:
        hosts = sum(v for k, v in r.cpu_roles.items() if k.startswith("compile hosts"))
        cells.append(f"{(hosts - sum(r.purposes.values())) / r.n:.2f}")
    print("| not sampled: processes shorter than 0.2 s, the hosts' SSH listeners | " + " | ".join(cells) + " |")
    print(
        "| of the above, PE's procedure itself (agent runs, agent service, install stand-in) | "
        + " | ".join(f"{sum(r.purposes.get(k, 0.0) for k in PROCEDURE) / r.n:.2f}" for r in rows)
        + " |"
    )


def print_phases(
    rows: list[Row], kinds: tuple[tuple[str, str], ...], spans: Callable[[Row], dict[str, tuple[float, float, int]]]
) -> None:
    print("| resource | " + " | ".join(f"N={r.n}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for suffix, label in kinds:
        cells = []
        for r in rows:
            start, end, count = spans(r).get(suffix, (0.0, 0.0, 0))
            cells.append(f"{start:.1f}-{end:.1f} ({count})" if count else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")


def print_by_hand(hands: list[by_hand.ByHand]) -> None:
    """PE's procedure alone (bench/by_hand.py): the floors the product is judged against."""
    if not hands:
        print("PE's procedure by hand: not run (--no-by-hand, or a generation before 2019.7)\n")
        return
    print(
        "PE's procedure by hand (bench/by_hand.py: the documented commands in a script, no product; the same "
        "hosts, knobs and sampler):"
    )
    print("| N | wall (s) | ratio to N=1 | machine CPU-s | CPU-s per compiler |")
    print("|---|---|---|---|---|")
    for h in hands:
        print(
            f"| {h.n} | {h.seconds:.1f} | {h.seconds / hands[0].seconds:.2f} | {h.cpu_seconds:.0f} | "
            f"{h.cpu_seconds / h.n:.1f} |"
        )
    print()
    print("| step | " + " | ".join(f"N={h.n} (s)" for h in hands) + " |")
    print("|---|" + "---|" * len(hands))
    for step in hands[-1].steps:
        print(f"| {step} | " + " | ".join(f"{h.steps.get(step, 0.0):.1f}" for h in hands) + " |")
    print()
    print("What the compile hosts' CPU buys by hand, CPU-s per compiler (sampled as above):")
    print_purpose_rows([(h.n, h.purposes) for h in hands])
    print()


PE_LIKE_KNOBS = {"install": 60.0, "master_run": 60.0, "puppetdb_run": 30.0, "console_run": 30.0}


def print_goals(
    rows: list[Row], knobs: dict[str, float], preview: Preview, preview_masters: int, hands: list[by_hand.ByHand]
) -> None:
    """Issue 16's goals, each figure beside its target (a goal this run cannot judge says why),
    and where the procedure by hand ran, its figure: the floor of that goal on this machine."""
    first, last = rows[0], rows[-1]
    hand_ratio = hand_cpu = ""
    if len(hands) > 1:
        hand_ratio = (
            f"; PE's procedure by hand {hands[-1].seconds / hands[0].seconds:.2f} "
            f"({hands[-1].seconds:.0f} / {hands[0].seconds:.0f} s)"
        )
    if hands:
        hand_cpu = f"; PE's procedure by hand {hands[-1].cpu_seconds / hands[-1].n:.1f} at N={hands[-1].n}"
    ratio = f"{last.seconds / first.seconds:.2f} (N={last.n} / N={first.n})"
    pe_like = knobs == PE_LIKE_KNOBS
    knob_text = ",".join(f"{k}={v:g}" for k, v in PE_LIKE_KNOBS.items())
    procedure = sum(last.purposes.get(k, 0.0) for k in PROCEDURE) / last.n
    cpu = (
        f"{last.cpu_seconds / last.n:.1f} at N={last.n} (provider {last.provider_cpu / last.n:.1f}; PE's procedure "
        f"on the compile host alone {procedure:.1f}: see the purposes table){hand_cpu}"
    )
    scale_in = f"{last.scale_in_seconds / first.scale_in_seconds:.2f} (N={last.n} / N={first.n}, through the program)"
    cores = os.cpu_count() or 1
    batch = {r.n: r.phases.get("-provisioning", (0.0, 0.0, 0)) for r in (first, last)}
    batch_wall = {n: end - start for n, (start, end, _) in batch.items()}
    # A lower bound from the CPU alone: the batch of N masters cannot end sooner than its
    # CPU-s spread over every core, nor sooner than one master's batch; what follows it
    # (refresh, admission) as measured. Not binding when the work cannot overlap the knobs'
    # sleeps (every master sleeps at the same time, then they share the cores).
    floor = max(last.batch_cpu / cores, batch_wall[first.n]) + last.seconds - batch_wall[last.n]
    floor_text = (
        f"; lower bound from the CPU on {cores} cores {floor / first.seconds:.2f} (the batch's "
        f"{last.batch_cpu:.0f} CPU-s / {cores}, then the rest as measured){hand_ratio}"
    )
    goals = [
        (
            "1. adding 16 masters / adding 1, PE-like latencies",
            ratio + floor_text if pe_like else f"run with --knobs {knob_text} (this run: {ratio}{floor_text})",
            "<= 1.3",
        ),
        ("2. machine CPU-s per added master", cpu, "<= 8"),
        ("3. removing 16 / removing 1", scale_in, "<= 2"),
        (
            f"4. no-change preview of {preview_masters} masters, in the provider server",
            f"{preview.rpc_seconds:.2f}s (median of {PREVIEW_RUNS}), {preview.remote} remote connections",
            "< 1 s, 0",
        ),
        ("5. `make test` on this machine kind", "printed by .ci/run (`ci: make test took`)", "<= 40 min"),
    ]
    print("| goal (issue 16) | this run | target |")
    print("|---|---|---|")
    for goal, figure, target in goals:
        print(f"| {goal} | {figure} | {target} |")


def _machine() -> str:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores, {int(mem.split()[1]) // 1024 // 1024 + 1} GB"


if __name__ == "__main__":
    main()
