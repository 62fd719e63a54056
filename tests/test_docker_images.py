"""The Dockerfiles: what they declare (non-root, health check, ports, entry), and their install and start steps
run here as the image would run them: the bundled runtime pip-installed offline into a target folder, the
CMD started from it (not from the repository), and the HEALTHCHECK command run against it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from importlib import metadata

import pytest

from helpers import REPO, free_port, wait_until
from watchdog.template_command import install_templates

CPU_TEMPLATE = os.path.join(REPO, "templates", "python3-torch-batch", "Dockerfile")
GPU_TEMPLATE = os.path.join(REPO, "docker", "python3-torch-batch-gpu", "Dockerfile")
AUTOSCALER = os.path.join(REPO, "docker", "autoscaler", "Dockerfile")


def parse(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in open(path).read().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def env_of(steps) -> dict[str, str]:
    """The ENV instructions as a dict (``ENV a=1 b=2`` form)."""
    env: dict[str, str] = {}
    for word, rest in steps:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def one(steps, word: str) -> str:
    found = [rest for w, rest in steps if w == word]
    assert len(found) == 1, f"expected one {word}, got {found}"
    return found[0]


def healthcheck_command(steps) -> list[str]:
    """The HEALTHCHECK's CMD as an argv (shell form, as Docker runs it)."""
    rest = one(steps, "HEALTHCHECK")
    return ["sh", "-c", rest.split(" CMD ", 1)[1]]


@pytest.mark.parametrize("path", [CPU_TEMPLATE, GPU_TEMPLATE, AUTOSCALER])
def test_dockerfile_is_non_root_with_health_check_and_exec_cmd(path):
    steps = parse(path)
    words = [w for w, _ in steps]
    assert words[0] in ("FROM", "ARG")
    user_at = words.index("USER")
    assert one(steps, "USER") not in ("root", "0")
    assert user_at < words.index("CMD"), "CMD must run as the non-root user"
    assert "HEALTHCHECK" in words and "--interval" in one(steps, "HEALTHCHECK")
    cmd = json.loads(one(steps, "CMD"))  # exec form: signals reach python, not a shell
    assert cmd[:2] == ["python", "-m"]
    for word, rest in steps:
        if word == "RUN" and "pip install" in rest:
            assert "--no-cache-dir" in rest, f"pip cache left in the image: {rest}"
        if word == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists" in rest


def test_gpu_template_matches_the_cpu_template_but_for_cuda():
    cpu, gpu = parse(CPU_TEMPLATE), parse(GPU_TEMPLATE)
    assert one(gpu, "FROM").startswith("nvidia/cuda:")
    assert any("download.pytorch.org/whl/cu" in rest for w, rest in gpu if w == "ARG")
    for word in ("CMD", "EXPOSE", "HEALTHCHECK", "USER", "WORKDIR"):
        assert one(cpu, word).replace("start-period=30s", "") == one(gpu, word).replace("start-period=60s", ""), word
    cpu_env, gpu_env = env_of(cpu), env_of(gpu)
    assert {k: v for k, v in gpu_env.items() if k in cpu_env} == cpu_env
    assert gpu_env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    meta = open(os.path.join(os.path.dirname(GPU_TEMPLATE), "template.yml")).read()
    assert "language: python3-torch-batch-gpu" in meta and "fprocess: python -m watchdog" in meta


def _template_context(tmp_path, dockerfile: str):
    """The folder `faas-cli build` sends: template (runtime/ bundled) + handler, with ``dockerfile``."""
    [folder] = install_templates(str(tmp_path / "project"))
    context = tmp_path / "context"
    shutil.copytree(folder, context)
    shutil.copy(dockerfile, context / "Dockerfile")
    return context


def _run_template_steps(context, target):
    """Run the Dockerfile's pip steps offline: the runtime and the function's requirements into ``target``."""
    steps = parse(str(context / "Dockerfile"))
    copies = {src.rstrip("/"): dst for w, rest in steps if w == "COPY" for src, dst in [rest.split()]}
    assert copies["runtime"] == "/opt/faas-infer/"
    ran = []
    for word, rest in steps:
        if word != "RUN" or "pip install" not in rest:
            continue
        if "torch==" in rest:
            continue  # the torch wheel comes from the network; the venv's torch stands in for it
        args = shlex.split(rest.split("pip install", 1)[1].replace("/opt/faas-infer", str(context / "runtime")))
        args = [a for a in args if a != "--no-cache-dir"]
        if args[0] == "-r":
            args[1] = str(context / args[1])
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
               "--target", str(target), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=context)
        assert result.returncode == 0, result.stdout + result.stderr
        ran.append(args)
    assert len(ran) == 2, ran  # the runtime and the function's requirements


@pytest.mark.parametrize("dockerfile", [CPU_TEMPLATE, GPU_TEMPLATE], ids=["cpu", "gpu"])
def test_template_image_steps_install_and_serve(tmp_path, dockerfile):
    context = _template_context(tmp_path, dockerfile)
    target = tmp_path / "site"
    _run_template_steps(context, target)
    assert (target / "watchdog" / "__main__.py").exists() and (target / "batcher" / "queue.py").exists()
    steps = parse(str(context / "Dockerfile"))
    home = tmp_path / "home"
    shutil.copytree(context / "function", home / "function")
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "port", "metrics_port")}
    image_env = env_of(steps)
    # The image's venv (/opt/venv on the GPU base) is the test venv here.
    path = image_env.pop("PATH", "$PATH").replace("/opt/venv/bin", os.path.dirname(sys.executable))
    env.update(image_env)
    env.update({"port": str(port), "metrics_port": str(metrics_port), "bind_address": "127.0.0.1",
                "TMPDIR": str(tmp_path), "PYTHONPATH": str(target), "healthcheck_interval": "0.2",
                "PATH": os.path.dirname(sys.executable) + os.pathsep + path.replace("$PATH", os.environ["PATH"])})
    cmd = json.loads(one(steps, "CMD"))
    log = open(tmp_path / "watchdog.log", "wb")
    proc = subprocess.Popen([sys.executable if c == "python" else c for c in cmd], cwd=home, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        check = [c.replace("8080", str(port)) for c in healthcheck_command(steps)]

        def healthy():
            return subprocess.run(check, env=env, cwd=home, capture_output=True, timeout=10).returncode == 0
        wait_until(healthy, 60, 0.2, what=f"the HEALTHCHECK command to pass (log {log.name})")
        loaded = subprocess.run([sys.executable, "-c", "import watchdog, batcher; print(watchdog.__file__)"],
                                env=env, cwd=home, capture_output=True, text=True).stdout
        assert loaded.startswith(str(target)), loaded  # served by the installed runtime, not the repository
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_autoscaler_image_steps(tmp_path):
    steps = parse(AUTOSCALER)
    # Every pinned requirement is what the test venv runs, so the image gets the versions the tests cover.
    req = os.path.join(REPO, "docker", "autoscaler", "requirements.txt")
    for line in open(req):
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            assert metadata.version(name) == version, name
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--no-index", "-r", req],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not any(l.startswith("torch") for l in open(req))
    # COPY exactly the packages listed, then import the sidecar from that folder alone.
    opt = tmp_path / "opt"
    for word, rest in steps:
        if word == "COPY":
            src, dst = rest.split()
            if src.endswith("/"):
                shutil.copytree(os.path.join(REPO, src), opt / os.path.basename(dst.rstrip("/")),
                                ignore=shutil.ignore_patterns("__pycache__"))
    dockerignore = open(AUTOSCALER + ".dockerignore").read()
    for word, rest in steps:
        if word == "COPY":
            assert f"!{rest.split()[0]}" in dockerignore, rest
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_of(steps))
    env["PYTHONPATH"] = str(opt)
    probe = ("import sys, autoscaler.__main__, autoscaler.loop, autoscaler.ilp, autoscaler.metrics\n"
             f"repo = {REPO!r}\n"
             "ours = [m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None) and "
             "m.__name__.split('.')[0] in ('autoscaler', 'batcher', 'cop_profiler', 'faas_infer', 'watchdog', 'provider')]\n"
             "print('torch' in sys.modules, [f for f in ours if not f.startswith(sys.argv[1])])")
    out = subprocess.run([sys.executable, "-c", probe, str(opt)], env=env, cwd=opt, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False []", out.stdout  # torch-free, nothing from outside the copied packages
    # The CMD starts and keeps running without a gateway (a failing tick is logged, not fatal).
    env.update({"gateway_url": f"http://127.0.0.1:{free_port()}", "interval": "0.2", "LOG_LEVEL": "INFO",
                "metrics_port": str(free_port())})
    cmd = json.loads(one(steps, "CMD"))
    proc = subprocess.Popen([sys.executable if c == "python" else c for c in cmd], cwd=opt, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        time.sleep(2)
        assert proc.poll() is None, proc.stdout.read()
        check = healthcheck_command(steps)
        serves_metrics = subprocess.run(check, env=env, capture_output=True, timeout=10).returncode == 0
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode in (0, -15), output
    assert serves_metrics, f"the image's HEALTHCHECK failed against the autoscaler's metrics port:\n{output}"


def test_every_dockerfile_copy_source_exists():
    for path, root in ((AUTOSCALER, REPO),):
        for word, rest in parse(path):
            if word == "COPY":
                src = rest.split()[0]
                assert os.path.exists(os.path.join(root, src)), src
    assert re.search(r"^FROM python:3\.11-slim", open(AUTOSCALER).read(), re.M)
