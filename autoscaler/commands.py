"""Subcommands the autoscaler package adds to ``faas-infer``."""

COMMANDS = {"autoscale": "autoscaler.autoscale_command", "plan": "autoscaler.plan_command"}
