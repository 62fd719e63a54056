"""Flags shared by ``faas-infer autoscale`` and ``faas-infer plan``, turned into an AutoscalerConfig."""

from __future__ import annotations

import argparse
import os

from autoscaler.config import AutoscalerConfig

# flag -> AutoscalerConfig field
FLAGS = {"gateway": "gateway_url", "redis_url": "redis_url", "prometheus_url": "prometheus_url",
         "secret_mount_path": "secret_mount_path", "nodes_file": "nodes_file", "profile_db": "profile_db",
         "interval": "interval", "solver": "solver", "beta": "beta", "headroom": "headroom",
         "solver_time_limit": "solver_time_limit", "scale_down_delay": "scale_down_delay",
         "max_replicas_per_variant": "max_replicas_per_variant"}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--gateway, --redis-url, --interval and the main knobs; defaults come from $<field> then the config."""
    defaults = AutoscalerConfig()
    for flag, name in FLAGS.items():
        parser.add_argument("--" + flag.replace("_", "-"), dest=name, default=None,
                            help=f"{name} (default ${name} or {getattr(defaults, name)!r})")


def config_from_args(args: argparse.Namespace) -> AutoscalerConfig:
    """Environment (field names) overridden by flags."""
    env = {k: v for k, v in os.environ.items() if k in AutoscalerConfig.__dataclass_fields__}
    env.update({name: str(getattr(args, name)) for name in FLAGS.values() if getattr(args, name, None) is not None})
    return AutoscalerConfig.from_env(env)
