# Two entry points (see README): `make lab` and `make test`. Run as root on Debian bookworm.
PY := .venv/bin/python

.PHONY: deps lab lab-down lab-reset lab-status lint typecheck unit test matrix bench bench-harness

## Debian packages, the venv, and the Pulumi CLI (scripts/install-pulumi.sh).
deps:
	bash scripts/install-deps.sh

## Bring the lab up (idempotent), then run the main job against it: the real Pulumi CLI
## (built by `deps` if none is on PATH) applies the lab stack (scripts/main-job.sh).
lab: deps
	$(PY) -m lab up
	bash scripts/main-job.sh

lab-down:
	$(PY) -m lab down

lab-reset:
	$(PY) -m lab reset

lab-status:
	$(PY) -m lab status

lint: deps
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: deps
	.venv/bin/mypy

unit: deps
	$(PY) -m pytest -q -m "not lab"

## The whole suite: lint, types, unit and engine tests, then the lab tests (brings the lab up).
test: deps lint typecheck
	$(PY) -m pytest -q --durations=15

## The generation matrix: the program 0 -> 2 -> 1 -> 0 masters on every PE generation profile
## of the lab and on the other layouts (tests/labtests/test_generations.py; `make test` runs
## 0 -> 2 -> 0, each generation in one layout).
matrix: deps
	PELAB_MATRIX=full $(PY) -m pytest -q -p no:cacheprovider tests/labtests/test_generations.py

## Benchmarks against the lab (print tables; see docs/performance.md): `bench` through the
## real Pulumi CLI with PE's procedure by hand and the harness beside it (issue 29's goals);
## `bench-harness` the harness at 1, 4, 16 masters (issue 16's).
bench: deps
	$(PY) -m lab up
	$(PY) -m bench.engine

bench-harness: deps
	$(PY) -m lab up
	$(PY) -m bench.scale_out
