"""speqmoe's Amaranth hardware (docs/architecture.md)."""

REPLICA = "speqmoe_replica"
"""Attribute of a register that is a deliberate copy of another (one copy per consumer, so
that each copy can be placed beside its consumer). Synthesis would merge registers with the
same input; :mod:`speqmoe.fpga` marks the flip-flops behind signals with this attribute
``keep``."""
