"""The Prometheus text exposition: names, labels, escaping, histograms, series appearing on first event."""

import pytest

from faas_infer.promtext import Registry


def test_counter_gauge_histogram_render():
    r = Registry()
    c = r.counter("http_requests_total", "Requests", ("code", "method"))
    g = r.gauge("queue_depth", "Depth")
    h = r.histogram("latency_seconds", "Latency", ("fn",), buckets=(0.1, 1))
    assert r.render() == "\n"  # nothing until the first event
    c.inc(code="200", method="post")
    c.inc(2, code="200", method="post")
    g.set(3)
    h.observe(0.05, fn="a")
    h.observe(0.5, fn="a")
    h.observe(5, fn="a")
    text = r.render()
    assert '# TYPE http_requests_total counter' in text
    assert 'http_requests_total{code="200",method="post"} 3' in text
    assert "queue_depth 3" in text
    assert 'latency_seconds_bucket{fn="a",le="0.1"} 1' in text
    assert 'latency_seconds_bucket{fn="a",le="1"} 2' in text
    assert 'latency_seconds_bucket{fn="a",le="+Inf"} 3' in text
    assert 'latency_seconds_count{fn="a"} 3' in text and 'latency_seconds_sum{fn="a"} 5.55' in text


def test_label_values_are_escaped():
    r = Registry()
    r.counter("x_total", "x", ("v",)).inc(v='a"b\\c\nd')
    assert 'x_total{v="a\\"b\\\\c\\nd"} 1' in r.render()


def test_callback_gauge_is_read_at_scrape_time():
    r = Registry()
    value = [1]
    r.gauge("live", "live", callback=lambda: value[0])
    value[0] = 7
    assert "live 7" in r.render()


def test_wrong_labels_and_duplicate_names_are_refused():
    r = Registry()
    c = r.counter("a_total", "a", ("code",))
    with pytest.raises(ValueError, match="labels"):
        c.inc(method="get")
    with pytest.raises(ValueError, match="registered twice"):
        r.counter("a_total", "again")


def test_remove_forgets_a_series():
    r = Registry()
    g = r.gauge("replicas", "r", ("fn",))
    g.set(2, fn="a")
    g.set(1, fn="b")
    g.remove(fn="a")
    assert 'replicas{fn="a"}' not in r.render() and 'replicas{fn="b"} 1' in r.render()


def test_label_sets_given_as_numbers_or_bools_are_never_confused():
    registry = Registry()
    counter = registry.counter("calls_total", "calls", ["code"])
    for value in ("1", 1, True, "True", 1, "1"):
        counter.inc(code=value)
    assert counter.value(code="1") == 4 and counter.value(code="True") == 2


def test_observe_many_counts_each_value_once():
    registry = Registry()
    hist = registry.histogram("wait_seconds", "wait", buckets=(0.01, 0.1))
    hist.observe_many([0.001, 0.05, 0.5])
    hist.observe_many([])
    hist.observe(0.002)
    assert hist.snapshot() == ((2, 3), 0.553, 4)
