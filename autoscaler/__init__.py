"""The autoscaler sidecar: observe (OpenFaaS, Redis, nodes), decide (pure; ILP or greedy), act.

Modules: ``config`` (the one frozen config), ``snapshot`` (what observe hands decide), ``predictor``
(execution-time sources), ``candidates`` (per-function configurations under INFless's rules), ``ilp`` (the
only PuLP module), ``greedy`` (fallback selection and best-fit packing), ``guards`` (guard rails),
``decide`` (the pure decision), ``plan`` (its result), ``openfaas``/``nodes``/``observe`` (reading the world),
``act`` (changing it), ``loop`` (the clock-owning control loop), ``metrics`` (its /metrics) and ``attainment``
(SLO attainment read from Prometheus for those metrics only: no decision reads Prometheus).
"""
