"""SigV4 against AWS's published test suite; the S3 client against the local S3-compatible server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fsd.channel import Message
from fsd.errors import ChannelError, ChannelTimeout, JobAborted
from fsd.s3_channel import S3Channel
from fsd.s3_client import S3Client
from fsd.s3_server import S3Server
from fsd.sigv4 import EMPTY_SHA256, Credentials, authorization
from helpers import silent_listener

SUITE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service")
HEADERS = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}


@pytest.mark.parametrize("method,query,expected", [
    ("GET", [], "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),          # get-vanilla
    ("POST", [], "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),         # post-vanilla
    ("GET", [("Param2", "value2"), ("Param1", "value1")],                                   # query-order-key-case
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
])
def test_sigv4_reproduces_the_aws_test_suite(method, query, expected):
    auth = authorization(SUITE, method, "/", query, HEADERS, EMPTY_SHA256, "20150830T123600Z")
    assert auth == ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                    f"SignedHeaders=host;x-amz-date, Signature={expected}")


@pytest.fixture
def signed_server():
    server = S3Server(credentials=Credentials("key", "secret")).start()
    yield server
    server.stop()


def test_object_operations_with_signatures(signed_server):
    client = S3Client(signed_server.url, Credentials("key", "secret"))
    client.create_bucket("b")
    client.put("b", "job/1/0-c", b"\x00\x01")
    client.put("b", "job/a b+c", b"odd name")
    assert client.get("b", "job/1/0-c") == b"\x00\x01" and client.get("b", "job/a b+c") == b"odd name"
    assert client.get("b", "missing") is None
    assert client.list("b", "job/")[0] == ["job/1/0-c", "job/a b+c"]
    client.delete("b", "job/1/0-c")
    assert client.list("b")[0] == ["job/a b+c"]
    with pytest.raises(ChannelError, match="HTTP 403 SignatureDoesNotMatch"):
        S3Client(signed_server.url, Credentials("key", "wrong")).get("b", "job/a b+c")
    with pytest.raises(ChannelError, match="HTTP 403 InvalidAccessKeyId"):
        S3Client(signed_server.url).get("b", "job/a b+c")


def test_listing_follows_continuation_tokens():
    server = S3Server().start()
    try:
        client = S3Client(server.url)
        client.create_bucket("b")
        server.store.buckets["b"].update({f"k{i:04d}": b"" for i in range(1203)})
        keys, requests_made = client.list("b", "k")
        assert len(keys) == 1203 and requests_made == 2
    finally:
        server.stop()


def test_s3_channel_round_trip_and_timeout():
    server = S3Server().start()
    try:
        client = S3Client(server.url)
        client.create_bucket("fsd")
        channel = S3Channel(client, "fsd")
        channel.endpoint("j", 0).send([Message(1, 2, 0, b"abcd"), Message(2, 2, 0, b"efgh")])
        receiver = channel.endpoint("j", 1)
        assert receiver.receive(2, [0], time.monotonic() + 1) == {0: b"abcd"}
        with pytest.raises(ChannelTimeout, match="rank 1: no layer-3 activations from rank 0"):
            receiver.receive(3, [0], time.monotonic() + 0.1)
        assert receiver.usage().requests["get"] >= 2 and receiver.usage().requests["delete"] == 1
        assert client.list("fsd")[0] == ["fsd/j/2/0-2"]  # rank 1 deleted what it read; rank 2 read nothing
        assert channel.purge("j", [0, 1, 2]).requests == {"list": 1, "delete": 1}
        assert client.list("fsd")[0] == []
    finally:
        server.stop()


def test_s3_abort_stops_a_waiting_rank():
    server = S3Server().start()
    try:
        client = S3Client(server.url)
        client.create_bucket("fsd")
        channel = S3Channel(client, "fsd", abort_check=0.1)
        with ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(channel.endpoint("j", 0).receive, 2, [1], time.monotonic() + 30)
            time.sleep(0.2)
            started = time.monotonic()
            channel.abort("j", [0, 1], "ChannelTimeout: lost")
            with pytest.raises(JobAborted, match=r"rank 0: job j was aborted by the coordinator \(ChannelTimeout"):
                blocked.result(timeout=10)
        assert time.monotonic() - started < 5  # not the 30 s deadline
        assert channel.purge("j", [0, 1]).requests == {"list": 1, "delete": 1}  # the marker goes with the job
    finally:
        server.stop()


@pytest.fixture
def silent_endpoint():
    """The URL of a loopback socket that accepts connections and never answers (a hung object store)."""
    with silent_listener() as port:
        yield f"http://127.0.0.1:{port}"


def test_requests_to_a_silent_store_end_at_the_deadline(silent_endpoint):
    channel = S3Channel(S3Client(silent_endpoint), "fsd")  # the client's own limit: 10 s a request
    for attempt in (lambda e: e.send([Message(1, 2, 0, b"x")]), lambda e: e.receive(2, [1], time.monotonic() + 30)):
        started = time.monotonic()
        with pytest.raises(ChannelTimeout, match="s3 (PUT|GET) /fsd/fsd/j/2/"):
            attempt(channel.endpoint("j", 0, time.monotonic() + 0.5))
        assert time.monotonic() - started < 4  # the job's 0.5 s left, not 10 s
    with pytest.raises(ChannelTimeout, match="no time left before the deadline"):
        channel.endpoint("j", 0, time.monotonic() - 1).send([Message(1, 2, 0, b"x")])


def test_sweep_deletes_the_jobs_that_expired_and_nothing_else():
    server = S3Server().start()
    try:
        client = S3Client(server.url)
        client.create_bucket("fsd")
        channel = S3Channel(client, "fsd")
        old, live = f"1000000000-{'a' * 32}", f"2000000000-{'b' * 32}"
        for job in (old, live, "j", "1000000000-backup"):
            channel.endpoint(job, 0).send([Message(1, 2, 0, b"x")])
        assert channel.sweep(1_500_000_000.0).requests == {"list": 1, "delete": 1}
        assert client.list("fsd")[0] == ["fsd/1000000000-backup/2/0-1", f"fsd/{live}/2/0-1", "fsd/j/2/0-1"]
    finally:
        server.stop()


class SlowDownOnDelete(S3Client):
    """An S3 client whose DELETEs answer 503 SlowDown, as S3 does now and then."""

    def delete(self, bucket, key, timeout=None):
        raise ChannelError(f"s3 DELETE /{bucket}/{key}: HTTP 503 SlowDown")


def test_a_block_in_hand_is_not_lost_to_a_failed_delete():
    server = S3Server().start()
    try:
        client = SlowDownOnDelete(server.url)
        client.create_bucket("fsd")
        channel = S3Channel(client, "fsd")
        channel.endpoint("j", 0).send([Message(1, 2, 0, b"x")])
        assert channel.endpoint("j", 1).receive(2, [0], time.monotonic() + 5) == {0: b"x"}
    finally:
        server.stop()
