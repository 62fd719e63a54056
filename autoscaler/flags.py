"""Flags shared by ``faas-infer autoscale`` and ``faas-infer plan``, turned into an AutoscalerConfig."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from autoscaler.config import AutoscalerConfig, ConfigError
from faas_infer.envconfig import field_docs

# Every AutoscalerConfig field is a flag (--field-name); these keep a shorter spelling too.
ALIASES = {"gateway_url": "--gateway"}
FLAGS = [f.name for f in fields(AutoscalerConfig)]
# Settings of the running loop only (its pace and its /metrics server): a single decision has no use for them.
LOOP_ONLY = ("interval", "metrics_port", "metrics_bind")


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per setting (but ``exclude``), explained by the config's own field comments; defaults:
    $<field>, then built-in."""
    defaults = AutoscalerConfig()
    docs = field_docs(AutoscalerConfig)
    group = parser.add_argument_group("settings (each also read from the environment variable of its name)")
    for name in FLAGS:
        if name in exclude:
            continue
        spellings = ["--" + name.replace("_", "-")] + ([ALIASES[name]] if name in ALIASES else [])
        default = getattr(defaults, name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        env = f"${name}" + (", else $OPENFAAS_URL" if name == "gateway_url" else "")
        group.add_argument(*spellings, dest=name, default=None, metavar=name.upper(),
                           help=f"{docs.get(name, name)} (default: {env}, else {shown!r})".replace("%", "%%"))


def config_from_args(args: argparse.Namespace) -> AutoscalerConfig:
    """Environment (field names; faas-cli's ``OPENFAAS_URL`` for the gateway) overridden by flags. A bad
    setting, or a profile DB that is not there, prints one line and exits 2."""
    env = {k: v for k, v in os.environ.items() if k in AutoscalerConfig.__dataclass_fields__}
    if "gateway_url" not in env and os.environ.get("OPENFAAS_URL"):
        env["gateway_url"] = os.environ["OPENFAAS_URL"]
    env.update({name: str(getattr(args, name)) for name in FLAGS if getattr(args, name, None) is not None})
    try:
        config = AutoscalerConfig.from_env(env)
        if config.profile_db and not os.path.isfile(config.profile_db):
            raise ConfigError(f"profile_db={config.profile_db}: no such file (faas-infer profile MODEL --db FILE "
                              "makes one)")
    except ConfigError as exc:
        print(f"faas-infer: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return config
