"""faas-infer: ML inference on OpenFaaS with batching, operator-level prediction and ILP autoscaling.

This package holds the ``faas-infer`` command and the leaf utilities every other package may import
(unit parsing, Prometheus text exposition). It imports nothing else of ours at module level.
"""

__version__ = "0.1.0"
