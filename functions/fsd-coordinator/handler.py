"""FSD-Inference coordinator: serves a sparse DNN that is partitioned across FSD_WORKERS worker functions.

Input: {"input": [neurons numbers]} or {"sample": k} (the k-th generated GraphChallenge-style input).
Output: {"output": [neurons numbers], "active": bool, "run": {...}}; ``run`` reports the job's traffic,
timing and modelled cost. A batch of requests becomes one job. Configuration: FSD_* variables (fsd/README.md).
"""

import os

import numpy as np

from batcher import BadInput
from batcher.handlers import float_row, map_valid
from fsd.config import FsdConfig
from fsd.deployment import build_coordinator
from fsd.errors import FsdError
from fsd.model import inputs


def load():
    """Build the model's plan and connect to the channel once per process."""
    config = FsdConfig.from_env(os.environ)
    coordinator, model = build_coordinator(config)
    return coordinator, model.spec


def _parse(spec, request):
    doc = request.json()
    if not isinstance(doc, dict):
        raise BadInput('expected a JSON object with "input" or "sample"')
    if "sample" in doc and "input" in doc:
        raise BadInput('give "input" or "sample", not both')
    if "sample" in doc:
        if type(doc["sample"]) is not int or not 0 <= doc["sample"] < 2 ** 63:
            raise BadInput('"sample" must be a whole number in [0, 2**63)')
        return inputs(spec, 1, seed=doc["sample"])[0]
    if "input" not in doc:
        raise BadInput('expected a JSON object with "input" or "sample"')
    return np.frombuffer(float_row(doc["input"], spec.neurons, "input"), dtype=np.float32)


def handle_batch(state, requests):
    """Run the batch as one distributed job; a failed job answers every request with its error."""
    coordinator, spec = state

    def run(rows):
        try:
            result = coordinator.run(np.stack(rows))
        except FsdError as exc:
            return [exc] * len(rows)
        report = result.report()
        return [{"output": out.tolist(), "active": bool(out.any()), "run": report} for out in result.outputs]

    return map_valid(requests, lambda r: _parse(spec, r), run)
