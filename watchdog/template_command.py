"""Write the faas-infer OpenFaaS templates into ./template/, with the watchdog runtime bundled.

After this, `faas-cli new NAME --lang python3-torch-batch` and `faas-cli build` (or
`faas-cli build --shrinkwrap`) work offline: each template folder carries `runtime/`, the source of the
watchdog, batcher and faas_infer packages that its Dockerfile installs, and of fsd, which the sparse-DNN
functions (functions/fsd-coordinator, functions/fsd-worker) import.
"""

from __future__ import annotations

import argparse
import os
import shutil

HELP = "write the python3-torch-batch template (with the watchdog bundled) into ./template/"

RUNTIME_PACKAGES = ("watchdog", "batcher", "faas_infer", "fsd")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer template`."""
    parser.add_argument("--dir", default=".", help="project folder that gets template/ (default: current folder)")
    parser.add_argument("--force", action="store_true", help="overwrite templates that already exist")


def install_templates(project_dir: str, force: bool = False) -> list[str]:
    """Copy every template under templates/ into ``project_dir/template/``; returns the written folders."""
    source_root = os.path.join(REPO, "templates")
    written = []
    for name in sorted(os.listdir(source_root)):
        source = os.path.join(source_root, name)
        target = os.path.join(project_dir, "template", name)
        if os.path.exists(target):
            if not force:
                raise FileExistsError(f"{target} exists: pass --force to overwrite it")
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _bundle_runtime(os.path.join(target, "runtime"))
        written.append(target)
    return written


def _bundle_runtime(target: str) -> None:
    os.makedirs(target)
    for package in RUNTIME_PACKAGES:
        shutil.copytree(os.path.join(REPO, package), os.path.join(target, package),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    with open(os.path.join(target, "setup.py"), "w") as f:
        f.write("from setuptools import setup\n\n"
                f"setup(name='faas-infer-runtime', version='0.1.0', packages={list(RUNTIME_PACKAGES)!r},\n"
                "      install_requires=['flask>=3,<4', 'gunicorn>=22', 'redis[hiredis]>=5', 'pyyaml>=6',\n"
                "                        'numpy>=1.26', 'requests>=2.31'])\n")


def run(args: argparse.Namespace) -> int:
    """Write the templates and say where."""
    try:
        for folder in install_templates(args.dir, args.force):
            print(f"wrote {folder}")
    except FileExistsError as exc:
        print(f"faas-infer template: {exc}")
        return 1
    return 0
