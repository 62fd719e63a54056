"""The gateway metrics the provider mirrors: names nobody deployed cannot grow the series without bound."""

from provider.metrics import MAX_UNKNOWN_NAMES, GatewayMetrics


def test_unknown_names_are_recorded_up_to_a_bound_deployed_ones_always():
    m = GatewayMetrics("openfaas-fn")
    assert m.records("nope", known=False)  # as the gateway: an unknown function is counted under its name
    assert not m.records("", known=False)
    for i in range(MAX_UNKNOWN_NAMES):
        m.records(f"random{i}", known=False)
    assert not m.records("one-more", known=False)
    assert m.records("nope", known=False)  # already has series
    assert m.records("deployed", known=True)


def test_function_name_is_the_namespace_called():
    m = GatewayMetrics("openfaas-fn")
    m.on_start("fn", known=False, namespace="staging")
    m.on_done("fn", 503, 0.1, "staging")
    m.on_start("fn")
    m.on_done("fn", 200, 0.1)
    assert m.invocations_by_function() == {"fn.staging": 1.0, "fn.openfaas-fn": 1.0}
