"""FSD_* configuration."""

from __future__ import annotations

import re

import pytest

from fsd.config import FsdConfig
from fsd.errors import ConfigError


def test_from_env_reads_every_knob():
    config = FsdConfig.from_env({"FSD_WORKERS": "4", "FSD_RANK": "2", "FSD_CHANNEL": "s3",
                                 "FSD_S3_ENDPOINT": "http://127.0.0.1:9000", "FSD_MODEL": "neurons=256,layers=3",
                                 "FSD_PARTITIONER": "random", "FSD_TIMEOUT": "2.5", "FSD_WORKER_MEMORY_MB": "1024",
                                 "FSD_GATEWAY": "http://127.0.0.1:8080/", "FSD_WORKER_FUNCTION": "dnn-worker"})
    assert (config.workers, config.rank, config.channel, config.partitioner) == (4, 2, "s3", "random")
    assert config.model.neurons == 256 and config.timeout == 2.5 and config.memory.worker == 1024
    assert config.urls()[3] == "http://127.0.0.1:8080/function/dnn-worker-3"


@pytest.mark.parametrize("env,message", [
    ({"FSD_WORKERS": "0"}, "FSD_WORKERS=0: must be >= 1"),
    ({"FSD_WORKERS": "two"}, "FSD_WORKERS='two': must be a whole number"),
    ({"FSD_WORKERS": "2", "FSD_RANK": "2"}, "FSD_RANK=2: must be 0..1"),
    ({"FSD_CHANNEL": "sqs"}, "FSD_CHANNEL='sqs': must be one of redis, s3"),
    ({"FSD_CHANNEL": "redis"}, "FSD_REDIS_URL='': must be set when FSD_CHANNEL=redis"),
    ({"FSD_CHANNEL": "s3"}, "FSD_S3_ENDPOINT='': must be set when FSD_CHANNEL=s3"),
    # inf crashed load() with OverflowError; 1e300 failed every job on Redis's EXPIRE
    ({"FSD_TIMEOUT": "inf"}, "FSD_TIMEOUT=inf: must be a number of seconds in (0, 86400]"),
    ({"FSD_TIMEOUT": "1e300"}, "FSD_TIMEOUT=1e+300: must be a number of seconds in (0, 86400]"),
    # the rules of the model's fields name the variable and what the rule depends on
    ({"FSD_MODEL": "neurons=10"}, "FSD_MODEL='neurons=10': window=16: must be < neurons/2 (neurons=10)"),
    ({"FSD_MODEL": "neurons=64,connections=0"}, "FSD_MODEL='neurons=64,connections=0': connections=0: must be 1..2"),
    # ymax=nan answered every request with NaN outputs (not JSON), ymax=-1 with -1 everywhere
    ({"FSD_MODEL": "neurons=64,ymax=nan"}, "FSD_MODEL='neurons=64,ymax=nan': ymax=nan: must be a number in (0, "),
    ({"FSD_MODEL": "neurons=64,ymax=-1"}, "FSD_MODEL='neurons=64,ymax=-1': ymax=-1.0: must be a number in (0, "),
    # inf (or past float32's largest) let activations overflow: an input of 3e38 answered 500, not JSON
    ({"FSD_MODEL": "neurons=64,ymax=inf"}, "FSD_MODEL='neurons=64,ymax=inf': ymax=inf: must be a number in (0, "
                                           "3.40282e+38]"),
    ({"FSD_MODEL": "neurons=64,ymax=1e39"}, "ymax=1e+39: must be a number in (0, 3.40282e+38]"),
    # a memory of nan answered every job 500 (its cost is not JSON); a negative one billed negative costs
    ({"FSD_COORDINATOR_MEMORY_MB": "nan"}, "FSD_COORDINATOR_MEMORY_MB=nan: must be a number of MB > 0"),
    ({"FSD_WORKER_MEMORY_MB": "-512"}, "FSD_WORKER_MEMORY_MB=-512.0: must be a number of MB > 0"),
    ({"FSD_WORKER_MEMORY_MB": "inf"}, "FSD_WORKER_MEMORY_MB=inf: must be a number of MB > 0"),
    ({"FSD_PRICES": '{"gb_second": -1}'}, "FSD_PRICES='{\"gb_second\": -1}': gb_second=-1 must be a number >= 0"),
    ({"FSD_PRICES": '{"s3_get": NaN}'}, "FSD_PRICES='{\"s3_get\": NaN}': s3_get=nan must be a number >= 0"),
    ({"FSD_PRICES": '{"s3_get": true}'}, "FSD_PRICES='{\"s3_get\": true}': s3_get=True must be a number >= 0"),
    ({"FSD_PRICES": "[1]"}, "FSD_PRICES='[1]': must be a JSON object of numbers"),
])
def test_errors_name_key_value_and_rule(env, message):
    base = {"FSD_REDIS_URL": "redis://127.0.0.1:1/0"} if env.get("FSD_CHANNEL") != "redis" else {}
    with pytest.raises(ConfigError, match=re.escape(message)):
        FsdConfig.from_env({**base, **env})


def test_worker_urls_must_match_workers():
    config = FsdConfig.from_env({"FSD_WORKERS": "2", "FSD_REDIS_URL": "redis://x", "FSD_WORKER_URLS": "http://a"})
    with pytest.raises(ConfigError, match="must list 2 URLs"):
        config.urls()
