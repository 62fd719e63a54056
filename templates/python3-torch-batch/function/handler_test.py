"""Run with: python -m pytest function/ (from the function's build folder or the template folder)."""

import importlib.util
import json
import os

from batcher import BadInput, Request

_spec = importlib.util.spec_from_file_location("handler", os.path.join(os.path.dirname(__file__), "handler.py"))
handler = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(handler)


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
