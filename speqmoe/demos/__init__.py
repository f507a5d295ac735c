"""Sections of `speqmoe demo`, one module each (see speqmoe.demo)."""
