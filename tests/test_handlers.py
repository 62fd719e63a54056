"""batcher.handlers: map_valid's isolation and the typed rows (float_row, int_row, join_rows)."""

from __future__ import annotations

import array
import json
import os

import pytest

from batcher import BadInput, Request
from batcher.handlers import float_bytes, float_row, int_row, join_rows, map_valid, require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_float_row_is_float32_in_order():
    row = float_row([0.5, -1, 2.25], 3, "features")
    assert row.typecode == "f" and list(row) == [0.5, -1.0, 2.25]


@pytest.mark.parametrize("values, message", [
    ([1.0, 2.0], "'features' must be a list of 3 numbers, got 2"),
    ("abc", "'features' must be a list of 3 numbers, got str"),
    ([1.0, "x", 2.0], "'features' must hold only numbers"),
    ([1.0, None, 2.0], "'features' must hold only numbers"),
    ([1.0, 1e39, 2.0], "'features' holds a number out of float32 range"),
    ([1.0, 10 ** 400, 2.0], "'features' must hold only numbers"),
    ([1.0, True, 2.0], "'features' must hold only numbers, not true or false"),
])
def test_float_row_names_the_problem(values, message):
    with pytest.raises(BadInput) as err:
        float_row(values, 3, "features")
    assert str(err.value) == message


def test_float_bytes_reads_little_endian_float32():
    assert float_bytes(array.array("f", [1.5, -2.0]).tobytes(), 2).tolist() == [1.5, -2.0]
    with pytest.raises(BadInput, match=r"raw body must be 2 little-endian float32 values \(8 bytes\), got 7 bytes"):
        float_bytes(b"\0" * 7, 2)
    with pytest.raises(BadInput, match="raw body holds NaN or infinity"):
        float_bytes(array.array("f", [1.0, float("nan")]).tobytes(), 2)


def test_int_row_pads_and_cuts():
    assert list(int_row([3, 4], 4, "tokens", 0, 10)) == [3, 4, 0, 0]
    assert list(int_row([1, 2, 3, 4, 5], 3, "tokens", 0, 10)) == [1, 2, 3]
    assert int_row([], 2, "tokens", 0, 10, pad=7).tolist() == [7, 7]


@pytest.mark.parametrize("values", [[1, 10], [-1], [1.0], [True], "12", None, [2 ** 70]])
def test_int_row_refuses_what_is_not_an_id(values):
    with pytest.raises(BadInput, match=r"'tokens' must be a list of integers in \[0, 10\)"):
        int_row(values, 4, "tokens", 0, 10)


def test_join_rows_is_one_writable_buffer():
    rows = [array.array("f", [1, 2]), array.array("f", [3, 4])]
    joined = join_rows(rows)
    assert joined.tolist() == [1, 2, 3, 4] and joined.typecode == "f"
    memoryview(joined)[0] = 9.0  # writable, so torch.frombuffer shares it without a warning
    assert rows[0][0] == 1  # the rows themselves are untouched


def test_map_valid_fails_only_bad_requests():
    def parse(request):
        return float_row(require(request.json(), "x", list), 2, "x")

    requests = [Request(body=json.dumps({"x": [1, 2]}).encode()), Request(body=b'{"x": [1]}'),
                Request(body=json.dumps({"x": [3, 4]}).encode())]
    out = map_valid(requests, parse, lambda rows: [sum(join_rows(rows)[2 * i:2 * i + 2]) for i in range(len(rows))])
    assert out[0] == 3.0 and out[2] == 7.0
    assert isinstance(out[1], BadInput) and "got 1" in str(out[1])


def test_example_handlers_batch_like_one_at_a_time():
    """The examples' batched path (one tensor per batch) gives each request the answer it gets alone."""
    from bench.common import sample_body
    from watchdog.handler import load_handler

    for name in ("mlp", "lstm", "textcnn"):
        handler = load_handler(os.path.join(REPO, "functions", name))
        requests = [Request(body=sample_body(name, i)[0], headers={"Content-Type": "application/json"})
                    for i in range(5)]
        together = handler.handle(requests)
        alone = [handler.handle([r])[0] for r in requests]
        for a, b in zip(together, alone):
            assert a["class"] == b["class"] and a["score"] == pytest.approx(b["score"], abs=1e-5), name


def test_mlp_answers_raw_float32_as_it_answers_json():
    from watchdog.handler import load_handler

    handler = load_handler(os.path.join(REPO, "functions", "mlp"))
    features = [((i * 37) % 100) / 50 - 1 for i in range(256)]
    as_json = Request(body=json.dumps({"features": features}).encode(), headers={"Content-Type": "application/json"})
    raw = Request(body=array.array("f", features).tobytes(), headers={"Content-Type": "application/octet-stream"})
    short = Request(body=b"\0" * 12, headers={"Content-Type": "application/octet-stream"})
    out = handler.handle([as_json, raw, short])
    assert out[0]["class"] == out[1]["class"] and out[0]["score"] == pytest.approx(out[1]["score"], abs=1e-6)
    assert isinstance(out[2], BadInput) and "got 12 bytes" in str(out[2])


@pytest.mark.parametrize("value, status, body, content_type", [
    (None, 200, b"", None),
    ({"body": "hi"}, 200, b"hi", "text/html; charset=utf-8"),
    ({"statusCode": 202, "body": b"\x00\x01", "headers": {"Content-type": "application/octet-stream"}}, 202,
     b"\x00\x01", "application/octet-stream"),
    ({"body": [1, 2]}, 200, b"[1, 2]", "application/json"),
    ({"body": "<b/>", "headers": {"content-type": "text/xml"}}, 200, b"<b/>", "text/xml"),
    ({"statusCode": 204}, 204, b"", None),
    # as the template: other keys ignored, digits in a string, headers as pairs
    ({"statusCode": "201", "body": "x", "isBase64Encoded": False, "headers": [("Content-Type", "text/csv")]}, 201,
     b"x", "text/csv"),
])
def test_python3_http_answers_become_responses(value, status, body, content_type):
    from watchdog.http_compat import answer

    response = answer(value)
    assert (response.status, response.body) == (status, body)
    named = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
    assert named == content_type


@pytest.mark.parametrize("value, words", [
    ("text", "returned a str"),
    ({"statusCode": "two hundred"}, "statusCode 'two hundred': must be an int"),
    ({"headers": ["a"]}, "headers as a list"),
])
def test_python3_http_answers_that_are_not_its_shape_name_the_problem(value, words):
    from batcher.errors import HandlerFailed
    from watchdog.http_compat import answer

    with pytest.raises(HandlerFailed, match=words.replace("[", r"\[").replace("]", r"\]")):
        answer(value)


def test_a_two_argument_handle_is_the_state_form_when_load_exists_and_the_template_form_when_not(tmp_path):
    from helpers import write_handler
    from watchdog.handler import load_handler

    stateful = load_handler(write_handler(str(tmp_path / "a"), """
        def load():
            return "state"

        def handle(state, request):
            return state + ":" + request.text
    """))
    assert stateful.handle([Request(b"x")]) == ["state:x"]
    template = load_handler(write_handler(str(tmp_path / "b"), """
        def handle(event, context):
            return {"body": event.body.decode() + "/" + event.method}
    """))
    [response] = template.handle([Request(b"x", method="PUT")])
    assert response.body == b"x/PUT" and response.status == 200


@pytest.mark.parametrize("source, template", [
    ("def handle(event, context): pass", True),
    ("def handle(event, context=None): pass", True),
    ("class H:\n    def __call__(self, event, context): pass\nhandle = H()", True),
    ("import functools\ndef f(x, event, context): pass\nhandle = functools.partial(f, 1)", True),
    ("def handle(request): pass", False),
    ("def load(): pass\ndef handle(state, request): pass", False),
    ("def handle_batch(state, requests): pass\ndef handle(event, context): pass", False),
])
def test_the_python3_http_form_is_told_by_two_positional_parameters_and_no_load(source, template):
    import types

    from watchdog.http_compat import is_http_handler

    module = types.ModuleType("function.handler")
    exec(source, module.__dict__)
    assert is_http_handler(module) is template
