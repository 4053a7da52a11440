"""Benchmarks: each prints a markdown table and writes bench/results/<name>.json."""
