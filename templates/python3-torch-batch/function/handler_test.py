"""Run with: python -m pytest function/ (from the function's build folder or the template folder)."""

import json
import os

from batcher import BadInput, Request
from faas_infer.packages import import_module_of

# Imported as the watchdog imports it, as the package ``function``, so that relative imports of the
# handler's own modules (``from .model import build_model``) work here as they do when served.
handler = import_module_of(os.path.dirname(os.path.abspath(__file__)), "function", "handler")


def request(doc):
    return Request(body=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})


def test_one_output_per_request_in_order():
    model = handler.load()
    outputs = handler.handle_batch(model, [request({"features": [0.1 * i] * 8}) for i in range(5)])
    assert len(outputs) == 5
    assert all(set(o) == {"class", "score"} and 0 <= o["score"] <= 1 for o in outputs)


def test_bad_input_fails_only_its_request():
    model = handler.load()
    outputs = handler.handle_batch(model, [request({"features": [1] * 8}), request({"features": [1]})])
    assert isinstance(outputs[1], BadInput) and "must be a list of 8 numbers" in str(outputs[1])
    assert isinstance(outputs[0], dict)
