"""Distributed inference across functions in the style of FSD-Inference: a model too big for one function
is row-partitioned layer by layer across W worker functions that exchange activations through a channel
(a Redis queue or S3 object storage) under a coordinator function. See ``fsd/README.md``."""
