"""Flags shared by ``faas-infer autoscale`` and ``faas-infer plan``, turned into an AutoscalerConfig."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from autoscaler.config import AutoscalerConfig
from faas_infer.envconfig import field_docs

# Every AutoscalerConfig field is a flag (--field-name); these keep a shorter spelling too.
ALIASES = {"gateway_url": "--gateway"}
FLAGS = [f.name for f in fields(AutoscalerConfig)]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, explained by the config's own field comments; defaults: $<field>, then built-in."""
    defaults = AutoscalerConfig()
    docs = field_docs(AutoscalerConfig)
    group = parser.add_argument_group("settings (each also read from the environment variable of its name)")
    for name in FLAGS:
        spellings = ["--" + name.replace("_", "-")] + ([ALIASES[name]] if name in ALIASES else [])
        default = getattr(defaults, name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(*spellings, dest=name, default=None, metavar=name.upper(),
                           help=f"{docs.get(name, name)} (default: ${name}, else {shown!r})".replace("%", "%%"))


def config_from_args(args: argparse.Namespace) -> AutoscalerConfig:
    """Environment (field names) overridden by flags."""
    env = {k: v for k, v in os.environ.items() if k in AutoscalerConfig.__dataclass_fields__}
    env.update({name: str(getattr(args, name)) for name in FLAGS if getattr(args, name, None) is not None})
    return AutoscalerConfig.from_env(env)
