"""Benchmarks against peers: ``python -m bench NAME``; see bench/README.md."""
