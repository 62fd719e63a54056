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
from dataclasses import dataclass, field
from typing import Any

HELP = "run the platform locally: Redis, the OpenFaaS-compatible provider, the stack, the autoscaler"


def _port(text: str) -> int:
    """A TCP port number (argparse type)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number 1..65535")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``faas-infer up``."""
    parser.add_argument("-f", "--file", default="stack.yml", help="stack file (default stack.yml)")
    parser.add_argument("--port", type=_port, default=8080, help="API port (default 8080)")
    parser.add_argument("--bind", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of starting one")
    parser.add_argument("--no-redis", action="store_true", help="no Redis: each replica batches alone")
    parser.add_argument("--no-autoscaler", action="store_true", help="do not start the autoscaler")
    parser.add_argument("--autoscaler-port", type=_port, default=8082,
                        help="the autoscaler's metrics port, where faas-infer top looks (default 8082; another "
                             "free port when it is taken)")
    parser.add_argument("--prometheus-port", type=_port, default=9090,
                        help="Prometheus's port (default 9090; another free port when it is taken)")
    parser.add_argument("--no-deploy", action="store_true", help="start the platform with no function")
    parser.add_argument("--basic-auth", default="auto", choices=("auto", "true", "false"),
                        help="basic auth on /system routes; auto: on unless bound to loopback (default auto)")
    parser.add_argument("--secret-mount-path", default="",
                        help="folder with basic-auth-user/-password (default: generated under the run dir)")
    parser.add_argument("--run-dir", default="", help="folder for logs and replica dirs (default: temporary)")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds to wait for the stack's replicas before printing the table (default 120)")
    parser.add_argument("-s", "--provider-setting", action="append", default=[], metavar="KEY=VALUE",
                        type=_setting, help="a provider setting, repeatable (e.g. -s max_follows=4 -s "
                                            "liveness_timeout=10): any of " + ", ".join(_provider_fields()))


def _provider_fields() -> list[str]:
    from dataclasses import fields

    from provider.config import ProviderConfig

    return [f.name for f in fields(ProviderConfig) if f.name not in _SET_BY_UP]


# Provider settings `up` sets itself (from its own flags or the session).
_SET_BY_UP = frozenset(("bind_address", "port", "stack_file", "run_dir", "basic_auth", "parent_pid", "redis_url",
                        "secret_mount_path", "healthz_token"))


def _setting(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` naming a provider setting (argparse type)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in _provider_fields():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(_provider_fields())}")
    from provider.config import ConfigError, ProviderConfig

    try:
        ProviderConfig.from_env({key: value.strip()})
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return key, value.strip()


@dataclass
class _Session:
    """What one ``faas-infer up`` run has decided and started; printed as the table at the end."""

    args: argparse.Namespace
    run_dir: str
    own_run_dir: bool
    auth_on: bool
    secret_path: str
    auth: tuple[str, str] | None
    url: str
    platform: Any
    lines: list[tuple[str, str]] = field(default_factory=list)
    redis_url: str = ""

    def client_flags(self) -> str:
        """What a faas-infer command printed for this platform needs to reach its API."""
        return f"--gateway {self.url}" + (f" --secret-mount-path {self.secret_path}" if self.auth_on else "")


# How long the Redis given with --redis-url may take to answer a PING at start.
REDIS_CHECK_SECONDS = 3.0


def run(args: argparse.Namespace) -> int:
    """Start, print, wait for a signal, stop."""
    from faas_infer.stack import StackError, load_stack
    from provider.up import UpError

    try:
        stack = load_stack(args.file, dict(os.environ))
    except StackError as exc:
        print(f"faas-infer up: {exc}", file=sys.stderr)
        return 2
    if args.autoscaler_port == args.prometheus_port:
        print(f"faas-infer up: --autoscaler-port and --prometheus-port are both {args.prometheus_port}: "
              "they must differ", file=sys.stderr)
        return 2
    session = _new_session(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _start_redis(session)
        _start_provider(session)
        statuses = {} if args.no_deploy else _deploy(session, stack, stop)
        if stop.is_set():  # Ctrl-C while the replicas were starting: nothing more is started
            _say("stopping...")
            return 0
        commands = _start_sidecars(session)
        _print_table(session, statuses, commands)
        return _serve_until_stopped(session.platform, stop)
    except (UpError, StackError) as exc:
        print(f"faas-infer up: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            session.platform.stop(_say)
        finally:
            if session.own_run_dir:
                shutil.rmtree(session.run_dir, ignore_errors=True)
        _say("stopped")


def _say(text: str) -> None:
    """Print a status line. Output piped to ``tee`` or ``head`` may be gone (the same Ctrl-C stops them):
    the shutdown goes on, quietly, and still removes the run folder."""
    try:
        print(text, flush=True)
    except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process, flushed at exit


def _new_session(args: argparse.Namespace) -> _Session:
    from provider.auth import write_secrets
    from provider.config import is_loopback
    from provider.up import Platform

    run_dir = os.path.abspath(args.run_dir) if args.run_dir else tempfile.mkdtemp(prefix="faas-infer-up-")
    os.makedirs(run_dir, exist_ok=True)
    auth_on = args.basic_auth == "true" or (args.basic_auth == "auto" and not is_loopback(args.bind))
    secret_path = os.path.abspath(args.secret_mount_path) if args.secret_mount_path else \
        os.path.join(run_dir, "secrets")
    auth = _credentials(secret_path, write_secrets) if auth_on else None
    return _Session(args, run_dir, not args.run_dir, auth_on, secret_path, auth,
                    f"http://{args.bind}:{args.port}", Platform(run_dir))


def _start_redis(session: _Session) -> None:
    args = session.args
    session.redis_url = args.redis_url
    if not args.redis_url and not args.no_redis:
        session.redis_url = session.platform.start_redis()
        pid = session.platform.children[-1].proc.pid
        session.lines.append(("redis", f"{session.redis_url} (private, pid {pid})"))
    elif args.redis_url:
        _check_redis(args.redis_url)
        session.lines.append(("redis", f"{args.redis_url} (given)"))
    else:
        session.lines.append(("redis", "none: each replica batches on its own"))


def _check_redis(url: str) -> None:
    """``UpError`` unless a Redis answers at ``url``: with a mistyped one every replica served alone from its
    own queue and the autoscaler saw no demand, while the table said the Redis was in use."""
    from faas_infer.redisclient import bounded_client
    from provider.up import UpError

    try:
        client = bounded_client(url, REDIS_CHECK_SECONDS)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - a bad URL (ValueError) or any failure of redis-py to reach it
        raise UpError(f"--redis-url {url}: no Redis answers there ({exc}); start it, fix the URL, or leave "
                      "--redis-url out to have up start a private redis-server") from None


def _start_provider(session: _Session) -> None:
    args = session.args
    flags = {"bind_address": args.bind, "port": str(args.port), "stack_file": os.path.abspath(args.file),
             "run_dir": os.path.join(session.run_dir, "provider"),
             "basic_auth": "true" if session.auth_on else "false", "parent_pid": str(os.getpid())}
    flags.update(dict(args.provider_setting))
    if session.redis_url:
        flags["redis_url"] = session.redis_url
    if session.auth_on:
        flags["secret_mount_path"] = session.secret_path
    provider = session.platform.start_provider(flags, session.url)
    auth = f"on: {session.secret_path}" if session.auth_on else "off"
    # Its log is the platform's, as the gateway's and queue-worker's are on OpenFaaS (failed async callbacks,
    # supervisor errors): `faas-infer logs NAME` shows a function's replicas and their lifecycle only.
    session.lines.insert(0, ("provider", f"{session.url} (pid {provider.proc.pid}, basic auth {auth}, "
                                         f"log {provider.log_path})"))


def _deploy(session: _Session, stack: Any, stop: threading.Event) -> dict:
    """Deploy the stack (partitioned models expanded into their workers) and wait for its replicas."""
    from fsd.stack import expand_partitioned
    from provider.up import deploy_stack, wait_available

    stack = expand_partitioned(stack, session.url, session.redis_url)
    names = deploy_stack(stack, session.url, session.auth)
    print(f"deployed {len(names)} function(s) from {session.args.file}; waiting for replicas...", flush=True)
    return wait_available(session.url, names, session.auth, session.args.ready_timeout, lambda: not stop.is_set())


def _start_sidecars(session: _Session) -> list[str]:
    """Prometheus first (the autoscaler reads SLO attainment from it), then the autoscaler; returns the
    commands worth trying against this platform."""
    from faas_infer.paths import PROFILE_DB
    from faas_infer.ports import free_port
    from provider import sidecars

    # Without Redis there is nothing to scale: the autoscaler reads arrivals from it, and its variants take
    # their requests from the shared queue.
    no_autoscaler = session.args.no_autoscaler or not session.redis_url
    secrets_path = session.secret_path if session.auth_on else ""
    autoscaler_port = free_port(preferred=session.args.autoscaler_port)  # 8082: where `faas-infer top` looks
    prometheus = sidecars.prometheus(sys.executable, session.run_dir, session.url, session.args.prometheus_port,
                                     "" if no_autoscaler else f"127.0.0.1:{autoscaler_port}", secrets_path)
    if prometheus is not None:
        child = session.platform.start_sidecar(prometheus)
        session.lines.append(("prometheus", f"{prometheus.url} (pid {child.proc.pid})"))
    else:
        session.lines.append(("prometheus", "not installed (make up installs it)"))
    profile_db = os.path.abspath(PROFILE_DB) if os.path.isfile(PROFILE_DB) else ""  # `faas-infer profile` made it
    autoscaler = None if no_autoscaler else sidecars.autoscaler(
        sys.executable, session.url, session.redis_url, secrets_path, prometheus.url if prometheus else "",
        autoscaler_port, profile_db)
    if autoscaler is not None:
        child = session.platform.start_sidecar(autoscaler)
        priced = f"COP profiles {profile_db}" if profile_db else f"built-in table; no {PROFILE_DB} here"
        session.lines.append(("autoscaler", f"running (pid {child.proc.pid}, metrics {autoscaler.url}, "
                                            f"log {child.log_path}, {priced})"))
    else:
        why = ("--no-autoscaler" if session.args.no_autoscaler
               else "no Redis: nothing to observe or share a queue through")
        session.lines.append(("autoscaler", f"disabled ({why})" if no_autoscaler else "not available"))
    top = f"{_command()} top {session.client_flags()}" + (
        f" --prometheus {prometheus.url}" if prometheus
        else f" --autoscaler {autoscaler.url}" if autoscaler is not None and autoscaler_port != 8082 else "")
    plan = f"{_command()} plan {session.client_flags()}" + \
        (f" --redis-url {session.redis_url}" if session.redis_url else "")
    return [top, plan]


def _command() -> str:
    """How to run faas-infer from this shell: the bare name when it is on PATH (an activated venv), else the
    script this process runs as (``.venv/bin/faas-infer`` after ``make up``)."""
    script = os.path.abspath(sys.argv[0])
    if os.path.basename(script) != "faas-infer" or shutil.which("faas-infer") == script:
        return "faas-infer"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else script


def _serve_until_stopped(platform: Any, stop: threading.Event) -> int:
    """Wait for Ctrl-C or SIGTERM; 1 if Redis or the provider died first."""
    while not stop.wait(0.5):
        dead = platform.first_dead()
        if dead is not None and dead.name in ("provider", "redis"):
            print(f"{dead.name} exited with code {dead.proc.returncode}:\n{dead.log_tail()}", file=sys.stderr)
            return 1
    _say("stopping...")
    return 0


def _credentials(folder: str, write_secrets) -> tuple[str, str]:
    user_file, password_file = (os.path.join(folder, n) for n in ("basic-auth-user", "basic-auth-password"))
    if not (os.path.exists(user_file) and os.path.exists(password_file)):
        write_secrets(folder, "admin", secrets.token_urlsafe(16))
        print(f"basic auth: generated user admin, password in {password_file}")
    with open(user_file) as f, open(password_file) as g:
        return f.read().strip(), g.read().strip()


def _print_table(session: _Session, statuses: dict, commands: list[str]) -> None:
    lines, url, run_dir = session.lines, session.url, session.run_dir
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
    kept = " (removed at exit: pass --run-dir to keep them)" if session.own_run_dir else ""
    print(f"  logs: {_command()} logs NAME {session.client_flags()}   (files under {run_dir}{kept})")
    for command in commands:
        print(f"  try:  {command}")
    print("  Ctrl-C stops everything.", flush=True)
