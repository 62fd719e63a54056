"""The embedded provider: an OpenFaaS-compatible provider/gateway API that runs function instances as local
watchdog processes on one machine (``faas-infer up``).

Modules: ``types`` (the wire types), ``errors``, ``config`` (the one frozen config), ``catalog`` (image to
handler folder), ``cores`` (CPU pinning), ``logstore`` (function logs), ``replica`` (one watchdog process),
``function`` (one function's replicas and routing), ``supervisor`` (the reconcile loop), ``runtime`` (the
provider facade), ``proxy`` (invocations), ``metrics`` (gateway metrics), ``auth``, ``app`` (routes),
``server`` (gunicorn), ``up`` and ``sidecars`` (the whole platform), ``*_command`` (CLI).
"""
