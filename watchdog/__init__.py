"""The faas-infer watchdog: the OpenFaaS function runtime with built-in, SLO-aware batching.

Handlers import what they need from ``batcher`` (``Request``, ``Response``, ``BadInput``).
"""
