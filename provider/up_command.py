"""faas-infer up: serve every function of a stack.yml on this machine behind an OpenFaaS-compatible API.

Starts a private redis-server (unless --redis-url or --no-redis), the provider on 127.0.0.1:8080,
deploys the stack, starts the autoscaler when the autoscaler package provides one, prints what runs
where, and stops everything on Ctrl-C or SIGTERM. faas-cli works against it:
  faas-cli list --gateway http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading

HELP = "run the platform locally: Redis, the OpenFaaS-compatible provider, the stack, the autoscaler"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``faas-infer up``."""
    parser.add_argument("-f", "--file", default="stack.yml", help="stack file (default stack.yml)")
    parser.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    parser.add_argument("--bind", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of starting one")
    parser.add_argument("--no-redis", action="store_true", help="no Redis: each replica batches alone")
    parser.add_argument("--no-autoscaler", action="store_true", help="do not start the autoscaler")
    parser.add_argument("--no-deploy", action="store_true", help="start the platform with no function")
    parser.add_argument("--basic-auth", default="auto", choices=("auto", "true", "false"),
                        help="basic auth on /system routes (auto: on unless bound to loopback)")
    parser.add_argument("--secret-mount-path", default="",
                        help="folder with basic-auth-user/-password (default: generated under the run dir)")
    parser.add_argument("--run-dir", default="", help="folder for logs and replica dirs (default: temporary)")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds to wait for the stack's replicas before printing the table")


def run(args: argparse.Namespace) -> int:
    """Start, print, wait for a signal, stop."""
    from faas_infer.stack import StackError, load_stack
    from fsd.stack import expand_partitioned
    from provider import sidecars
    from provider.auth import write_secrets
    from provider.config import is_loopback
    from provider.up import Platform, UpError, deploy_stack, wait_available

    try:
        stack = load_stack(args.file, dict(os.environ))
    except StackError as exc:
        print(f"faas-infer up: {exc}", file=sys.stderr)
        return 2
    own_run_dir = not args.run_dir
    run_dir = os.path.abspath(args.run_dir) if args.run_dir else tempfile.mkdtemp(prefix="faas-infer-up-")
    os.makedirs(run_dir, exist_ok=True)
    auth_on = args.basic_auth == "true" or (args.basic_auth == "auto" and not is_loopback(args.bind))
    secret_path = os.path.abspath(args.secret_mount_path) if args.secret_mount_path else \
        os.path.join(run_dir, "secrets")
    auth = None
    if auth_on:
        auth = _credentials(secret_path, write_secrets)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    platform = Platform(run_dir)
    url = f"http://{args.bind}:{args.port}"
    lines = []
    try:
        redis_url = args.redis_url
        if not redis_url and not args.no_redis:
            redis_url = platform.start_redis()
            lines.append(("redis", f"{redis_url} (private, pid {platform.children[-1].proc.pid})"))
        elif redis_url:
            lines.append(("redis", f"{redis_url} (given)"))
        else:
            lines.append(("redis", "none: each replica batches on its own"))
        flags = {"bind_address": args.bind, "port": str(args.port), "stack_file": os.path.abspath(args.file),
                 "run_dir": os.path.join(run_dir, "provider"), "basic_auth": "true" if auth_on else "false",
                 "parent_pid": str(os.getpid())}
        if redis_url:
            flags["redis_url"] = redis_url
        if auth_on:
            flags["secret_mount_path"] = secret_path
        provider = platform.start_provider(flags, url)
        lines.insert(0, ("provider", f"{url} (pid {provider.proc.pid}, basic auth "
                                     f"{'on: ' + secret_path if auth_on else 'off'})"))
        statuses = {}
        if not args.no_deploy:
            stack = expand_partitioned(stack, url, redis_url or "")
            names = deploy_stack(stack, url, auth)
            print(f"deployed {len(names)} function(s) from {args.file}; waiting for replicas...", flush=True)
            statuses = wait_available(url, names, auth, args.ready_timeout, lambda: not stop.is_set())
        from ops.prometheus import pick_port

        autoscaler_port = pick_port(8082)  # the port `faas-infer top` looks at by default
        prometheus = sidecars.prometheus(sys.executable, run_dir, url, 9090,
                                         "" if args.no_autoscaler else f"127.0.0.1:{autoscaler_port}",
                                         secret_path if auth_on else "")
        if prometheus is not None:
            child = platform.start_sidecar(prometheus)
            lines.append(("prometheus", f"{prometheus.url} (pid {child.proc.pid})"))
        else:
            lines.append(("prometheus", "not installed (make up installs it)"))
        autoscaler = None if args.no_autoscaler else sidecars.autoscaler(
            sys.executable, url, redis_url, secret_path if auth_on else "",
            prometheus.url if prometheus else "", autoscaler_port)
        if autoscaler is not None:
            child = platform.start_sidecar(autoscaler)
            lines.append(("autoscaler", f"running (pid {child.proc.pid}, metrics {autoscaler.url}, "
                                        f"log {child.log_path})"))
        else:
            lines.append(("autoscaler", "disabled (--no-autoscaler)" if args.no_autoscaler else "not available"))
        commands = [f"faas-infer top --gateway {url}" + (f" --prometheus {prometheus.url}" if prometheus else ""),
                    f"faas-infer plan --gateway {url}" + (f" --redis-url {redis_url}" if redis_url else "")]
        _print_table(lines, statuses, url, run_dir, commands, own_run_dir)
        while not stop.wait(0.5):
            dead = platform.first_dead()
            if dead is not None and dead.name in ("provider", "redis"):
                print(f"{dead.name} exited with code {dead.proc.returncode}:\n{dead.log_tail()}", file=sys.stderr)
                return 1
        print("stopping...", flush=True)
        return 0
    except (UpError, StackError) as exc:
        print(f"faas-infer up: {exc}", file=sys.stderr)
        return 1
    finally:
        platform.stop(lambda text: print(text, flush=True))
        if own_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        print("stopped", flush=True)


def _credentials(folder: str, write_secrets) -> tuple[str, str]:
    user_file, password_file = (os.path.join(folder, n) for n in ("basic-auth-user", "basic-auth-password"))
    if not (os.path.exists(user_file) and os.path.exists(password_file)):
        write_secrets(folder, "admin", secrets.token_urlsafe(16))
        print(f"basic auth: generated user admin, password in {password_file}")
    with open(user_file) as f, open(password_file) as g:
        return f.read().strip(), g.read().strip()


def _print_table(lines, statuses: dict, url: str, run_dir: str, commands: list[str], temporary: bool) -> None:
    width = max(len(name) for name, _ in lines)
    print("faas-infer up: running")
    for name, where in lines:
        print(f"  {name:<{width}}  {where}")
    if statuses:
        print("  functions:")
        fw = max(len(n) for n in statuses)
        for name, status in statuses.items():
            print(f"    {name:<{fw}}  {url}/function/{name}  {status.get('availableReplicas', 0)}/"
                  f"{status.get('replicas', 0)} ready")
    kept = " (removed at exit: pass --run-dir to keep them)" if temporary else ""
    print(f"  logs: faas-infer logs NAME   (files under {run_dir}{kept})")
    for command in commands:
        print(f"  try:  {command}")
    print("  Ctrl-C stops everything.", flush=True)
