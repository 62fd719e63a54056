"""Benchmarks: each module is ``faas-infer bench NAME``; they print a table and write JSON, never assert."""
