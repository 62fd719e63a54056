"""``python -m provider``: the OpenFaaS-compatible provider on its own. Flags are the config's fields."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from faas_infer.loglevel import configure_from_env
from provider.config import ConfigError, ProviderConfig


def build_parser() -> argparse.ArgumentParser:
    """One ``--flag`` per config field (``--bind-address``, ``--stack-file``, ...)."""
    from faas_infer.envconfig import field_docs

    parser = argparse.ArgumentParser(prog="python -m provider", description=__doc__)
    docs = field_docs(ProviderConfig)
    for f in fields(ProviderConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, metavar=f.name.upper(),
                            help=f"{docs.get(f.name, f.name)} (default: {f.default!r})".replace("%", "%%"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    if not configure_from_env(os.environ, "provider: configuration error"):
        return 2
    args = vars(build_parser().parse_args(argv))
    try:
        config = ProviderConfig.from_env({k: v for k, v in args.items() if v is not None})
        if config.auth_enabled:
            from provider.auth import Credentials

            Credentials.read(config.secret_mount_path)
        from provider.catalog import Catalog

        Catalog.from_stack_file(config.stack_file, dict(os.environ))
    except (ConfigError, ValueError) as exc:
        print(f"provider: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"provider: basic auth is on but its secrets cannot be read: {exc}", file=sys.stderr)
        return 2
    from provider.server import serve

    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
