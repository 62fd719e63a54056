"""stack.yml loading: faas-cli's ${VAR} substitution, plain records, errors naming the problem."""

import os

import pytest

from faas_infer.stack import StackError, load_stack, substitute
from faas_infer.units import parse_duration

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "openfaas", "stack.yml")


def test_substitution_with_defaults():
    assert substitute("${A}-${B:-x}-${C}", {"A": "1", "C": ""}) == "1-x-"


def test_recorded_faas_cli_stack_loads(tmp_path):
    stack = load_stack(FIXTURE)
    echo = stack.functions["py-echo"]
    assert echo.environment["max_inflight"] == "4" and echo.labels["com.openfaas.scale.max"] == "4"
    assert echo.limits == {"cpu": "500m", "memory": "256Mi"} and echo.constraints == ("node.platform.os == linux",)
    assert stack.functions["py-batch"].readonly_root_filesystem is True
    assert echo.handler_path.endswith(os.path.join("openfaas", "py-echo"))


def test_project_stack_has_slo_annotations_and_handlers():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stack = load_stack(os.path.join(repo, "stack.yml"), {})
    assert set(stack.functions) >= {"resnet", "lstm", "textcnn", "mlp"}
    assert stack.gateway == "http://127.0.0.1:8080"
    for fn in stack.functions.values():
        assert 0 < parse_duration(fn.annotations["com.faas-infer.latency_slo"]) <= 2
        assert os.path.isfile(os.path.join(fn.handler_path, "handler.py"))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(StackError, match="cannot read stack file"):
        load_stack(str(tmp_path / "missing.yml"))
    bad = tmp_path / "bad.yml"
    bad.write_text("functions: [1, 2]\n")
    with pytest.raises(StackError, match="expected a mapping with 'functions:'"):
        load_stack(str(bad))
    bad.write_text("functions:\n  f:\n    environment: [1]\n")
    with pytest.raises(StackError, match="function f: environment must be a mapping"):
        load_stack(str(bad))


def test_environment_file_as_faas_cli_reads_it(tmp_path):
    # Paths relative to the stack file; a later file overrides an earlier one, and both the function's
    # own environment (faas-cli's compileEnvironment).
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "base.yml").write_text("environment:\n  max_batch_size: 2\n  exec_timeout: 3s\n")
    (tmp_path / "envs" / "prod.yml").write_text("environment:\n  exec_timeout: 5s\n")
    (tmp_path / "stack.yml").write_text(
        "functions:\n  f:\n    environment: {max_batch_size: '16', write_timeout: 20s}\n"
        "    environment_file: [envs/base.yml, envs/prod.yml]\n")
    stack = load_stack(str(tmp_path / "stack.yml"))
    assert stack.functions["f"].environment == {"max_batch_size": "2", "write_timeout": "20s", "exec_timeout": "5s"}


def test_environment_file_errors_name_the_file(tmp_path):
    stack = tmp_path / "stack.yml"
    stack.write_text("functions:\n  f:\n    environment_file: [missing.yml]\n")
    with pytest.raises(StackError, match="function f: cannot read environment_file missing.yml"):
        load_stack(str(stack))
    (tmp_path / "flat.yml").write_text("max_batch_size: 2\n")
    stack.write_text("functions:\n  f:\n    environment_file: [flat.yml]\n")
    with pytest.raises(StackError, match="flat.yml: expected a mapping with 'environment:'"):
        load_stack(str(stack))


def test_environment_values_are_read_as_written_as_faas_cli_reads_them(tmp_path):
    # faas-cli decodes environment into map[string]string: an empty value is "", a scalar keeps its text.
    # Read as Python types they became "None" (deploy then failed: latency_slo='None': not a duration),
    # "True" and "1000.0".
    (tmp_path / "env.yml").write_text("environment:\n  latency_slo:\n  handler_process: true\n  EXTRA: ~\n"
                                      "  RATIO: 0.10\n  BIG: 1e3\n")
    (tmp_path / "stack.yml").write_text(
        "x-common: &common {OPT: yes}\n"
        "functions:\n  f:\n    environment:\n      <<: *common\n      EMPTY:\n      exec_timeout: 10\n"
        "    labels: {com.openfaas.scale.zero: false}\n"
        "    environment_file: [env.yml]\n    readonly_root_filesystem: false\n")
    f = load_stack(str(tmp_path / "stack.yml")).functions["f"]
    assert f.environment == {"OPT": "yes", "EMPTY": "", "exec_timeout": "10", "latency_slo": "",
                             "handler_process": "true", "EXTRA": "", "RATIO": "0.10", "BIG": "1e3"}
    assert f.labels == {"com.openfaas.scale.zero": "false"}
    assert f.readonly_root_filesystem is False
