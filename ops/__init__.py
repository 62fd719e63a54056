"""Operators' tools: a private Prometheus for ``faas-infer up`` (``prometheus``, ``targets``), the metrics
text parser (``scrape``) and ``faas-infer top`` (``top``). Images, faasd and Kubernetes files live in
``docker/``."""
