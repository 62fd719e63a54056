"""Dispatch: every waiter answered, failures isolated by bisection, contract breaks reported."""

import pytest

from batcher.dispatch import dispatch
from batcher.errors import BadInput, DeadlineExceeded, HandlerFailed
from batcher.queue import Pending
from batcher.request import Request, Response


def items(bodies, deadline=100.0):
    return [Pending(Request(body=b), deadline, 0.0) for b in bodies]


def results(batch):
    out = []
    for item in batch:
        exc = item.future.exception(timeout=0)
        out.append(exc if exc is not None else item.future.result(timeout=0))
    return out


def test_outputs_become_responses_in_order():
    batch = items([b"a", b"b", b"c"])
    outcome = dispatch(lambda reqs: [r.body.decode().upper() for r in reqs], batch, now=1.0)
    assert [r.body for r in results(batch)] == [b"A", b"B", b"C"]
    assert outcome.size == 3 and outcome.clean and outcome.succeeded == 3
    assert results(batch)[0].headers["X-Batch-Size"] == "3"


def test_value_kinds_are_converted():
    batch = items([b"1", b"2", b"3", b"4"])
    dispatch(lambda reqs: [b"raw", "text", {"k": 1}, Response(b"x", 201, {"A": "b"})], batch, 1.0)
    got = results(batch)
    assert got[0].headers["Content-Type"] == "application/octet-stream"
    assert got[1].headers["Content-Type"].startswith("text/plain")
    assert got[2].body == b'{"k":1}' and got[2].headers["Content-Type"] == "application/json"
    assert got[3].status == 201 and got[3].headers["A"] == "b"


def test_one_bad_input_fails_alone_by_bisection():
    calls = []

    def handle(reqs):
        calls.append(len(reqs))
        if any(r.body == b"bad" for r in reqs):
            raise BadInput("bad body")
        return [r.body for r in reqs]

    batch = items([b"1", b"2", b"bad", b"4", b"5", b"6", b"7", b"8"])
    outcome = dispatch(handle, batch, 1.0)
    got = results(batch)
    assert isinstance(got[2], BadInput) and got[2].status == 400
    assert [g.body for i, g in enumerate(got) if i != 2] == [b"1", b"2", b"4", b"5", b"6", b"7", b"8"]
    assert outcome.failed == 1 and not outcome.clean
    assert calls[0] == 8 and len(calls) <= 1 + 2 * 3  # bisection, not one call per request
    # each answer names the size of the call that made it: 4 for the good half, 2 and 1 around the bad input
    assert [g.headers["X-Batch-Size"] for i, g in enumerate(got) if i != 2] == ["2", "2", "1", "4", "4", "4", "4"]


def test_other_exceptions_are_500_naming_the_cause():
    batch = items([b"x"])
    dispatch(lambda reqs: 1 / 0, batch, 1.0)
    exc = results(batch)[0]
    assert isinstance(exc, HandlerFailed) and exc.status == 500 and "ZeroDivisionError" in str(exc)


def test_exception_in_a_slot_fails_only_that_request():
    batch = items([b"1", b"2"])
    dispatch(lambda reqs: ["ok", BadInput("no good")], batch, 1.0)
    got = results(batch)
    assert got[0].body == b"ok" and isinstance(got[1], BadInput)


def test_wrong_count_fails_the_batch_with_both_counts():
    batch = items([b"1", b"2", b"3"])
    dispatch(lambda reqs: ["only one"], batch, 1.0)
    for exc in results(batch):
        assert isinstance(exc, HandlerFailed) and "returned 1 responses for 3 requests" in str(exc)


def test_not_a_list_fails_the_batch():
    batch = items([b"1"])
    dispatch(lambda reqs: "a string", batch, 1.0)
    assert "must return a list" in str(results(batch)[0])


@pytest.mark.parametrize("outputs", [{b"a", b"b"}, frozenset({b"a", b"b"}), {"a": 1, "b": 2}.keys()])
def test_outputs_without_an_order_fail_the_batch(outputs):
    batch = items([b"1", b"2"])
    dispatch(lambda reqs: outputs, batch, 1.0)
    assert all("must return a list" in str(r) and "no order" in str(r) for r in results(batch))


def test_expired_requests_are_not_run():
    seen = []
    batch = items([b"late"], deadline=0.5) + items([b"ok"], deadline=10)
    dispatch(lambda reqs: seen.extend(r.body for r in reqs) or [r.body for r in reqs], batch, now=1.0)
    assert seen == [b"ok"]
    assert isinstance(results(batch)[0], DeadlineExceeded)


def test_cancelled_requests_are_skipped():
    batch = items([b"gone", b"here"])
    batch[0].future.cancel()
    outcome = dispatch(lambda reqs: [r.body for r in reqs], batch, 1.0)
    assert outcome.size == 1


def test_non_serialisable_output_fails_only_that_request():
    batch = items([b"1", b"2"])
    dispatch(lambda reqs: [object(), "fine"], batch, 1.0)
    got = results(batch)
    assert isinstance(got[0], HandlerFailed) and "not JSON-serialisable" in str(got[0])
    assert got[1].body == b"fine"


@pytest.mark.parametrize("exc", [SystemExit(1), KeyboardInterrupt()])
def test_sys_exit_or_interrupt_from_the_handler_fails_only_its_request(exc):
    # On a worker thread, SystemExit escaping would end the thread silently: every later request timed out.
    batch = items([b"1", b"bad", b"3"])

    def handle(reqs):
        if any(r.body == b"bad" for r in reqs):
            raise exc
        return [r.body for r in reqs]

    outcome = dispatch(handle, batch, 1.0)
    got = results(batch)
    assert isinstance(got[1], HandlerFailed) and type(exc).__name__ in str(got[1])
    assert got[0].body == b"1" and got[2].body == b"3"
    assert outcome.failed == 1 and outcome.succeeded == 2


@pytest.mark.parametrize("bad, problem", [
    (Response("text"), "body is a str"),
    (Response(b"x", 99999), "status 99999"),
    (Response(b"x", 101), "1xx are interim"),  # a client would wait on for the real answer
    (Response(b"x", 200, {"X-Bad": "a\r\nInjected: yes"}), "holds CR, LF or NUL"),
    (Response(b"x", 200, {"X-Name": "caf\u00e9 \u20ac"}), "not Latin-1"),
    (Response(b"x", 200, {"Bad Name": "v"}), "HTTP token"),
    (Response(b"x", 200, {"X-Count": 3}), "value is a int"),
])
def test_a_response_that_cannot_be_sent_fails_only_its_request(bad, problem):
    batch = items([b"1", b"2"])
    dispatch(lambda reqs: [bad, Response(b"fine")], batch, 1.0)
    got = results(batch)
    assert isinstance(got[0], HandlerFailed) and problem in str(got[0])
    assert got[1].body == b"fine"


def test_a_bytearray_or_memoryview_body_is_sent_as_its_bytes():
    from batcher.request import to_response

    assert to_response(Response(bytearray(b"ab"))).body == b"ab"
    assert to_response(Response(memoryview(b"cd"))).body == b"cd"


@pytest.mark.parametrize("body", [b"", b" \r\n", ""])
def test_an_empty_body_is_bad_input_saying_it_is_empty(body):
    with pytest.raises(BadInput, match="^request body is empty: expected JSON$"):
        Request(body=body).json()


def test_json_nested_too_deeply_is_bad_input():
    with pytest.raises(BadInput, match="nested too deeply"):
        Request(body=b"[" * 100_000).json()


def test_json_rejects_nan_in_requests_and_outputs():
    from batcher.request import to_response

    with pytest.raises(BadInput, match="NaN is not a JSON number"):
        Request(body=b'{"features": [NaN, 1]}').json()
    with pytest.raises(HandlerFailed, match="not JSON-serialisable"):
        to_response({"score": float("nan")})


def test_a_request_answered_meanwhile_elsewhere_is_skipped_and_costs_no_other():
    done, running = Pending(Request(b"a"), float("inf"), 0.0), Pending(Request(b"b"), float("inf"), 0.0)
    done.future.set_result(Response(b"from another instance"))
    later = Pending(Request(b"c"), float("inf"), 0.0)

    def handle(requests):
        later.future.set_result(Response(b"duplicate's reply"))  # arrives while the batch runs
        return [r.body for r in requests]

    dispatch(handle, [done, running, later], 0.0)
    assert done.future.result().body == b"from another instance"
    assert running.future.result().body == b"b"
    assert later.future.result().body == b"duplicate's reply"


def test_a_status_that_is_an_int_of_another_type_is_sent_as_a_plain_int():
    import http

    from batcher.request import to_response

    got = to_response(Response(b"made", http.HTTPStatus.CREATED))
    assert got.status == 201 and type(got.status) is int
    with pytest.raises(HandlerFailed, match="status True"):
        to_response(Response(b"x", True))
