"""The python3-torch-batch template: written by `faas-infer template`, laid out as faas-cli shrinkwrap does,
served by the bundled runtime (not the repository's copy), and its own handler test passes."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import requests
import yaml

from watchdog.template_command import install_templates


def shrinkwrap(project, function_name, handler_src):
    """What `faas-cli build --shrinkwrap` does: template into build/NAME, handler into build/NAME/function."""
    build = project / "build" / function_name
    shutil.copytree(project / "template" / "python3-torch-batch", build)
    shutil.rmtree(build / "function")
    shutil.copytree(handler_src, build / "function")
    return build


def test_template_files_follow_faas_cli_layout(tmp_path):
    [folder] = install_templates(str(tmp_path))
    meta = yaml.safe_load(open(os.path.join(folder, "template.yml")))
    assert meta["language"] == "python3-torch-batch" and meta["fprocess"] == "python -m watchdog"
    for path in ("Dockerfile", "function/handler.py", "function/handler_test.py", "function/requirements.txt",
                 "runtime/setup.py", "runtime/watchdog/__main__.py", "runtime/batcher/queue.py"):
        assert os.path.exists(os.path.join(folder, path)), path
    dockerfile = open(os.path.join(folder, "Dockerfile")).read()
    assert "USER app" in dockerfile and 'CMD ["python", "-m", "watchdog"]' in dockerfile


def test_template_refuses_to_overwrite_without_force(tmp_path):
    install_templates(str(tmp_path))
    try:
        install_templates(str(tmp_path))
    except FileExistsError as exc:
        assert "--force" in str(exc)
    else:
        raise AssertionError("second install should refuse")
    assert install_templates(str(tmp_path), force=True)


def test_shrinkwrapped_function_is_served_by_the_bundled_runtime(tmp_path, watchdogs):
    install_templates(str(tmp_path))
    template_handler = tmp_path / "template" / "python3-torch-batch" / "function"
    build = shrinkwrap(tmp_path, "classify", template_handler)
    wd = watchdogs(str(build / "function"), PYTHONPATH=str(build / "runtime"), max_batch_size=8)
    r = requests.post(wd.url, json={"features": [0.5] * 8}, timeout=30)
    assert r.status_code == 200 and set(r.json()) == {"class", "score"}
    bad = requests.post(wd.url, json={"features": [1, 2]}, timeout=30)
    assert bad.status_code == 400 and "must be a list of 8 numbers" in bad.text
    assert "runtime" in subprocess.run(
        [sys.executable, "-c", "import watchdog, sys; print(watchdog.__file__)"],
        env={**os.environ, "PYTHONPATH": str(build / "runtime")}, cwd=build, capture_output=True,
        text=True).stdout


def test_template_handler_test_passes(tmp_path):
    install_templates(str(tmp_path))
    folder = tmp_path / "template" / "python3-torch-batch"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "function/"],
                            cwd=folder, env={**os.environ, "PYTHONPATH": str(folder / "runtime")},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_template_handler_test_imports_a_handler_with_relative_imports(tmp_path):
    """README: handler.py is imported as the package ``function``, so ``from .model import ...`` works; the
    handler's own test must import it that way too, or such a handler cannot be tested."""
    install_templates(str(tmp_path))
    function = tmp_path / "classify"
    shutil.copytree(tmp_path / "template" / "python3-torch-batch" / "function", function)
    (function / "model.py").write_text("FEATURES = 8\n")
    source = (function / "handler.py").read_text()
    assert "\nFEATURES = 8\n" in source
    (function / "handler.py").write_text(source.replace("\nFEATURES = 8\n", "\nfrom .model import FEATURES\n"))
    runtime = tmp_path / "template" / "python3-torch-batch" / "runtime"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "classify/"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(runtime)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_example_handlers_answer_json(tmp_path):
    """Every example function in stack.yml loads and answers one well-formed request."""
    from watchdog.handler import load_handler
    from batcher import Request

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stack = yaml.safe_load(open(os.path.join(repo, "stack.yml")))
    samples = {"mlp": {"features": [0.1] * 256}, "lstm": {"text": "a fine day"},
               "textcnn": {"tokens": [1, 2, 3]}, "resnet": {"pixels": [7] * (3 * 64 * 64)}}
    assert set(samples) <= set(stack["functions"])
    for name, doc in samples.items():
        handler = load_handler(os.path.join(repo, stack["functions"][name]["handler"]))
        good = Request(body=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
        bad = Request(body=b"{}", headers={"Content-Type": "application/json"})
        # as curl -d sends it (a form) and faas-cli (text/plain): JSON is read whatever the Content-Type
        plain = Request(body=json.dumps(doc).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
        out = handler.handle([good, bad, plain])
        assert set(out[0]) == {"class", "score"}, name
        assert isinstance(out[1], ValueError), name
        assert out[2] == out[0], name


def test_the_resnet_example_tells_json_from_raw_bytes():
    from batcher import Request
    from watchdog.handler import load_handler

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    handler = load_handler(os.path.join(repo, "functions", "resnet"))
    doc = json.dumps({"pixels": [7] * (3 * 64 * 64)}).encode()
    raw = b"{" + bytes(3 * 64 * 64 - 1)  # an image whose first byte is "{"
    short = b"{" + bytes(99)
    out = handler.handle([Request(b"\xef\xbb\xbf" + doc, {"Content-Type": "text/plain"}),
                          Request(raw, {"Content-Type": "application/octet-stream"}), Request(raw),
                          Request(short, {"Content-Type": "application/octet-stream"})])
    assert set(out[0]) == {"class", "score"} and set(out[1]) == {"class", "score"} and out[2] == out[1]
    assert "raw image must be 12288 bytes" in str(out[3])


@pytest.mark.gpu
@pytest.mark.parametrize("folder", ["functions/resnet", "templates/python3-torch-batch/function"])
def test_the_gpu_examples_run_their_model_on_the_gpu(folder):
    """docker/kubernetes/gpu-stack.yml serves functions/resnet on a GPU, the GPU template starts from the
    skeleton: where torch sees a GPU both put the model there and answer from it."""
    import torch

    from batcher import Request
    from watchdog.handler import load_handler

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    handler = load_handler(os.path.join(repo, folder))
    assert handler.module.DEVICE == "cuda"
    doc = {"pixels": [7] * (3 * 64 * 64)} if "resnet" in folder else {"features": [1.0] * 8}
    out = handler.handle([Request(json.dumps(doc).encode(), {"Content-Type": "application/json"})] * 3)
    assert all(set(o) == {"class", "score"} for o in out)


# What the image gets besides the runtime's requirements: the Dockerfile installs torch first.
IMAGE_EXTRAS = {"torch"}
# Import names whose distribution is named otherwise in install_requires.
DISTRIBUTIONS = {"yaml": "pyyaml", "hiredis": "redis"}
# Imported by faas_infer.cli to find benchmarks; the image has no faas-infer command.
NOT_IN_IMAGE = {"bench"}


def test_the_bundle_holds_what_its_code_imports(tmp_path):
    """Every third-party import of the bundled packages is in the runtime's install_requires (or is torch)."""
    import ast

    [folder] = install_templates(str(tmp_path))
    runtime = os.path.join(folder, "runtime")
    setup_call = next(n for n in ast.walk(ast.parse(open(os.path.join(runtime, "setup.py")).read()))
                      if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in setup_call.keywords}
    required = {re.split(r"[\[<>=]", r)[0].lower() for r in kw["install_requires"]}
    missing = set()
    for package in kw["packages"]:
        for name in glob.glob(os.path.join(runtime, package, "*.py")):
            for node in ast.walk(ast.parse(open(name).read())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                for top in {n.split(".")[0] for n in names}:
                    if top in sys.stdlib_module_names or top in kw["packages"] or top == "__future__":
                        continue
                    if DISTRIBUTIONS.get(top, top) not in required | IMAGE_EXTRAS | NOT_IN_IMAGE:
                        missing.add(f"{top} ({os.path.relpath(name, runtime)})")
    assert not missing, sorted(missing)


def test_every_shipped_function_imports_with_the_bundle_alone(tmp_path):
    """Each function under functions/, laid out as in the image (WORKDIR with function/), imports with only
    the bundled runtime and installed libraries: python -S skips the editable install's .pth, so the
    repository's own packages are out of reach."""
    install_templates(str(tmp_path))
    runtime = tmp_path / "template" / "python3-torch-batch" / "runtime"
    functions = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "functions")
    builds = [str(shrinkwrap(tmp_path, name, os.path.join(functions, name)))
              for name in sorted(os.listdir(functions)) if os.path.isfile(os.path.join(functions, name, "handler.py"))]
    assert {"fsd-coordinator", "fsd-worker", "mlp"} <= {os.path.basename(b) for b in builds}
    libraries = [p for p in sys.path if p.endswith("site-packages")]
    script = textwrap.dedent("""
        import importlib, os, sys
        for build in sys.argv[1:]:
            for name in [m for m in sys.modules if m == "function" or m.startswith("function.")]:
                del sys.modules[name]
            sys.path.insert(0, build)
            importlib.invalidate_caches()
            importlib.import_module("function.handler")
            sys.path.remove(build)
        print(" ".join(sorted({os.path.dirname(os.path.dirname(m.__file__)) for name, m in sys.modules.items()
                               if name.split(".")[0] in ("watchdog", "batcher", "faas_infer", "fsd")})))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(runtime), *libraries])}
    result = subprocess.run([sys.executable, "-S", "-c", script, *builds], cwd=str(tmp_path), capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(runtime)]  # fsd included, all from the bundle
