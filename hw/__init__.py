"""speqmoe's Amaranth hardware (docs/architecture.md)."""

REPLICA = "speqmoe_replica"
"""Attribute of a register that is a deliberate copy of another (one copy per consumer, so
that each copy can be placed beside its consumer). Synthesis would merge registers with the
same input; :mod:`speqmoe.fpga` marks the flip-flops behind signals with this attribute
``keep``."""


def refuse(component, problem: str):
    """Raise ``ValueError(problem)`` for a component whose parameters are refused, without
    Amaranth's "created but never used" warning when the half-built object is collected."""
    never_built(component)
    raise ValueError(problem)


def never_built(component) -> None:
    """Mark *component* as never to be elaborated: its parameters were refused, or it exists
    only to be asked for its parameters, signature or layouts."""
    component._MustUse__silence = True


def refusing(init):
    """Decorator of a component's ``__init__`` that checks its parameters by raising: a
    refused component (``ValueError`` or ``TypeError``) is marked :func:`never_built`, so it
    leaves no "created but never used" warning either."""
    import functools

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except (ValueError, TypeError):
            never_built(self)
            raise
    return checked
