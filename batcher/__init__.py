"""Batch queues, the dispatch policy and the Redis key space shared with the autoscaler.

Imports nothing else of ours. The handler-facing names are re-exported here.
"""

from batcher.errors import BadInput, BatchError
from batcher.policy import BatchConfig
from batcher.queue import BatchQueue, LocalBatchQueue
from batcher.request import Request, Response

__all__ = ["BadInput", "BatchConfig", "BatchError", "BatchQueue", "LocalBatchQueue", "Request", "Response"]
