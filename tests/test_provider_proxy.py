"""The proxy's pure parts: the request target a replica gets."""

from __future__ import annotations

from provider.proxy import target_of


def test_the_target_is_the_raw_sub_path_in_origin_or_absolute_form():
    assert target_of({"PATH_INFO": "/function/fn/a b", "RAW_URI": "/function/fn/a%20b?x=1",
                      "QUERY_STRING": "x=1"}) == "/a%20b?x=1"
    assert target_of({"PATH_INFO": "/function/fn/a b", "RAW_URI": "http://127.0.0.1:8080/function/fn/a%20b?x=1",
                      "QUERY_STRING": "x=1"}) == "/a%20b?x=1"
    assert target_of({"PATH_INFO": "/async-function/fn", "RAW_URI": "HTTP://h/async-function/fn"}) == "/"


def test_without_raw_uri_the_decoded_path_is_encoded_again():
    # WSGI hands the path's bytes as latin-1: é sent as UTF-8 is "\xc3\xa9" here, and goes back as %C3%A9.
    environ = {"PATH_INFO": "/function/fn/caf\xc3\xa9/a b/50%/x:y@z", "QUERY_STRING": ""}
    assert target_of(environ) == "/caf%C3%A9/a%20b/50%25/x:y@z"
