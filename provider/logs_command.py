"""faas-infer logs NAME: a function's logs from the provider's logs API (GET /system/logs), like faas-cli logs.

Lines are printed as ``TIMESTAMP INSTANCE TEXT``; the provider's own events about the function (starts,
crashes, memory kills, restarts) come from instance ``provider``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "print (and follow) a function's logs from the provider"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``faas-infer logs``."""
    parser.add_argument("name", help="function name")
    parser.add_argument("-g", "--gateway", default=os.environ.get("OPENFAAS_URL", "http://127.0.0.1:8080"),
                        help="provider URL (default $OPENFAAS_URL or http://127.0.0.1:8080)")
    parser.add_argument("--tail", type=int, default=-1, help="only the last N lines (default: all)")
    parser.add_argument("--since", default="", help="only lines after this RFC 3339 time")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    parser.add_argument("--instance", default="", help="only this replica")
    parser.add_argument("--secret-mount-path", default="",
                        help="folder with basic-auth-user/-password when basic auth is on")
    parser.add_argument("--json", action="store_true", help="print the raw ndjson")


def run(args: argparse.Namespace) -> int:
    """Stream the logs to stdout."""
    import requests

    params = {"name": args.name, "tail": str(args.tail), "follow": "true" if args.follow else "false"}
    if args.since:
        params["since"] = args.since
    if args.instance:
        params["instance"] = args.instance
    auth = None
    if args.secret_mount_path:
        from provider.auth import Credentials

        try:
            creds = Credentials.read(args.secret_mount_path)
        except OSError as exc:  # was a FileNotFoundError traceback
            print(f"--secret-mount-path {args.secret_mount_path}: cannot read the credentials: {exc}",
                  file=sys.stderr)
            return 1
        auth = (creds.user, creds.password)
    try:
        response = requests.get(args.gateway.rstrip("/") + "/system/logs", params=params, auth=auth, stream=True,
                                timeout=(5, None))
    except requests.ConnectionError:
        print(f"cannot reach the provider at {args.gateway}: is `faas-infer up` running?", file=sys.stderr)
        return 1
    except requests.RequestException as exc:  # a gateway without http:// was a MissingSchema traceback
        print(f"--gateway {args.gateway}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"{response.status_code}: {response.text.strip()}", file=sys.stderr)
        return 1
    try:
        for line in response.iter_lines():
            if not line:
                continue
            if args.json:
                print(line.decode(), flush=True)
                continue
            message = json.loads(line)
            print(f"{message['timestamp']} {message['instance']} {message['text']}", flush=True)
    except KeyboardInterrupt:
        pass
    except requests.RequestException as exc:  # the provider went away mid-stream: was a traceback
        print(f"the provider at {args.gateway} closed the log stream: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0
