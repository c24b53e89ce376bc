"""Benchmarks that print tables (never timed assertions): see docs/performance.md."""
