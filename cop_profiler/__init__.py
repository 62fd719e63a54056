"""COP profiler: operator-level latency profiles and a torch-free latency predictor (INFless's COP).

Torch-free modules (safe for the autoscaler and the batch policy): ``errors``, ``hardware``, ``opspec``,
``graph``, ``interp``, ``schema``, ``db``, ``predictor``, ``profile_config``. Only ``tracer``, ``recorder``,
``template``, ``torchscript``, ``timer``, ``profiler``, ``whole``, ``modelref`` (when it builds a model) and
``zoo`` import torch.
"""
