"""Subcommands this package adds to ``faas-infer``."""

COMMANDS = {"watchdog": "watchdog.command", "template": "watchdog.template_command"}
