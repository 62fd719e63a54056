"""The node inventory from a nodes file (the local machine's needs psutil and NVML: not tested here)."""

from __future__ import annotations

import pytest

from autoscaler.nodes import load_nodes


def _file(tmp_path, gpus: str) -> str:
    path = tmp_path / "nodes.yaml"
    path.write_text(f"nodes:\n  - {{name: g, cpu: 4, memory: 8Gi, gpus: {gpus}}}\n")
    return str(path)


@pytest.mark.parametrize("gpus, count", [("2", 2), ("'2'", 2), ("0", 0), ("1.0", 1)])
def test_gpus_are_whole_devices(tmp_path, gpus, count):
    assert load_nodes(_file(tmp_path, gpus))[0].gpus == count


@pytest.mark.parametrize("gpus", ["0.5", "1.5", "-1", "true", "many"])
def test_a_fraction_or_negative_gpu_count_names_the_entry(tmp_path, gpus):
    """int() read 0.5 as no GPU, 1.5 as one and kept -1: the plan silently lost or invented devices."""
    with pytest.raises(ValueError, match=r"node #0: gpus=.*whole number of devices >= 0"):
        load_nodes(_file(tmp_path, gpus))


def test_a_label_yaml_reads_as_a_boolean_and_an_infinite_gpu_count_are_refused_by_entry(tmp_path):
    """``nvidia.com/gpu.present: true`` unquoted was the label value "True": no node met gpu-stack.yml's
    constraint nvidia.com/gpu.present=true, and the GPU function was left as it ran. ``gpus: .inf`` was an
    OverflowError traceback."""
    path = tmp_path / "nodes.yaml"
    path.write_text("- {name: g1, cpu: 4, memory: 16Gi, gpus: 1, labels: {nvidia.com/gpu.present: true}}\n")
    with pytest.raises(ValueError, match=r"node #0: .*nvidia.com/gpu.present.*True.*quote"):
        load_nodes(str(path))
    path.write_text("- {name: g1, cpu: 4, memory: 16Gi, gpus: .inf}\n")
    with pytest.raises(ValueError, match=r"node #0: gpus=inf: must be a whole number"):
        load_nodes(str(path))
    path.write_text("- {name: g1, cpu: 4, memory: 16Gi, gpus: 1, labels: {nvidia.com/gpu.present: 'true', rack: 7}}\n")
    assert load_nodes(str(path))[0].labels == {"nvidia.com/gpu.present": "true", "rack": "7"}
