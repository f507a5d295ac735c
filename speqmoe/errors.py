"""Errors the command line reports as one readable line (exit status 2)."""


class UserError(Exception):
    """A mistake in the user's input: bad configuration, missing file, bad argument."""
