"""Subcommands this package adds to ``faas-infer``."""

COMMANDS = {"up": "provider.up_command", "logs": "provider.logs_command"}
