"""COP profiler: operator-level latency profiles and a torch-free latency predictor (INFless's COP).

Torch-free modules (safe for the autoscaler and the batch policy): ``errors``, ``hardware``, ``opspec``,
``graph``, ``interp``, ``schema``, ``db``, ``predictor``. Only ``tracer``, ``recorder``, ``template``,
``torchscript``, ``timer``, ``profiler``, ``modelref`` (when it builds a model) and ``zoo`` import torch.
"""
