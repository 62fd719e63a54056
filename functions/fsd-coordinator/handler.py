"""FSD-Inference coordinator: serves a sparse DNN that is partitioned across FSD_WORKERS worker functions.

Input: {"input": [neurons numbers]} or {"sample": k} (the k-th generated GraphChallenge-style input).
Output: {"output": [neurons numbers], "active": bool, "run": {...}}; ``run`` reports the job's traffic,
timing and modelled cost. A batch of requests becomes one job. Configuration: FSD_* variables (fsd/README.md).
"""

import os

import numpy as np

from batcher import BadInput
from batcher.handlers import map_valid
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
    if "sample" in doc:
        if not isinstance(doc["sample"], int) or doc["sample"] < 0:
            raise BadInput('"sample" must be a whole number >= 0')
        return inputs(spec, 1, seed=doc["sample"])[0]
    values = doc.get("input")
    if not isinstance(values, list) or len(values) != spec.neurons:
        raise BadInput(f'"input" must be a list of {spec.neurons} numbers')
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadInput('"input" must hold only numbers') from None


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
