"""Benchmark sections of `speqmoe bench`, one module each (see speqmoe.bench)."""
