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
