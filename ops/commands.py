"""Subcommands the ops package adds to ``faas-infer``."""

COMMANDS = {"top": "ops.top"}
