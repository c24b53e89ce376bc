"""Benchmarks that print tables (never timed assertions): see README, "Performance"."""
