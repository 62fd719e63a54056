"""The bytes that cross Redis: JSON line plus raw body, errors rebuilt with their status."""

from __future__ import annotations

import pytest

from batcher import wire
from batcher.errors import BadInput, DeadlineExceeded, HandlerFailed, PayloadTooLarge, Rejected
from batcher.request import Request, Response


def test_a_request_envelope_round_trips_with_binary_body():
    request = Request(body=b"\x00\n\xff{", headers={"X-A": "1"}, method="PUT", path="/p", query="a=1", id="r1")
    env = wire.Envelope("tok", "inst", 123.5, 120.25, request)
    data = wire.encode_request(env)
    assert b"pickle" not in data and data.endswith(request.body)
    assert wire.decode_request(data) == env
    assert wire.token_of(data) == "tok" and wire.token_of(b"no token line") == ""


def test_tokens_are_plain_ascii_words():
    for token in ("", "a b", "a\nb", "é"):
        with pytest.raises(wire.WireError, match="token"):
            wire.encode_request(wire.Envelope(token, "inst", 1.0, 1.0, Request(b"")))


def test_replies_round_trip_and_errors_keep_their_status():
    ok = wire.decode_reply(wire.encode_reply(wire.Reply("t", Response(b"\n", 201, {"A": "b"}), "by")))
    assert (ok.token, ok.result, ok.served_by) == ("t", Response(b"\n", 201, {"A": "b"}), "by")
    for error in (BadInput("x"), PayloadTooLarge("x"), Rejected("x"), DeadlineExceeded("x"), HandlerFailed("x")):
        back = wire.decode_reply(wire.encode_reply(wire.Reply("t", error))).result
        assert (type(back), back.status, str(back)) == (type(error), error.status, "x")


@pytest.mark.parametrize("data", [b"no newline", b"tok\nnot json\nbody", b"tok\n[1]\nbody", b'tok\n{"r": "x"}\n',
                                  b'\n{"r":"i","d":1,"e":1,"q":{"id":"x"}}\nbody'])
def test_malformed_messages_raise_wire_error(data):
    with pytest.raises(wire.WireError):
        wire.decode_request(data)
