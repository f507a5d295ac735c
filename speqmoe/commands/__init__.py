"""Sub-commands of the speqmoe command line, one module each (see speqmoe.cli)."""
