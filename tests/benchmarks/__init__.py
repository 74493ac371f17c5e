"""Benchmarks (`make bench`): each ``bench_*.py`` module measures one figure beside its limit."""
