"""Bench only (bench/engine.py puts this directory on PYTHONPATH with PE_BENCH_SEED=1):
every dynamic provider's create answers at once with its inputs and a healthy status,
touching no host, so the real CLI writes the state of a deployment of many masters that
the lab has no hosts for. The state is then previewed with the real provider (without this
directory): what a no-change preview of a big deployment costs through the engine.

The statuses come from bench/healthy.py (the harness's seed uses the same table)."""

from __future__ import annotations

import os


def _seed() -> None:
    import importlib
    import uuid
    from typing import Any

    from pulumi.dynamic import CreateResult

    from bench.healthy import HEALTHY  # the project root is on PYTHONPATH (scripts/pulumi)

    for _, path, healthy in HEALTHY:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)

        def create(_self: Any, props: dict[str, Any], healthy: dict[str, str] = healthy) -> CreateResult:
            outs = {k: v for k, v in props.items() if k != "__provider"}
            return CreateResult(f"seeded-{uuid.uuid4().hex[:8]}", {**outs, **healthy})

        cls.create = create


if os.environ.get("PE_BENCH_SEED") == "1":
    _seed()
