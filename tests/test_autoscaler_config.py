"""AutoscalerConfig: built from an env mapping, errors name key, value and rule."""

from __future__ import annotations

import pytest

from autoscaler.config import AutoscalerConfig, ConfigError


def test_from_env_parses_every_kind():
    c = AutoscalerConfig.from_env({"interval": "2s", "scale_down_delay": "1m", "batch_sizes": "1,4",
                                   "cpu_steps": "0.5,1", "max_instances": "9", "default_memory": "1Gi",
                                   "solver": "cbc", "unknown": "x"})
    assert (c.interval, c.scale_down_delay, c.batch_sizes, c.cpu_steps) == (2.0, 60.0, (1, 4), (0.5, 1.0))
    assert c.max_instances == 9 and c.default_memory == 1024**3 and c.solver == "cbc"


@pytest.mark.parametrize("env, key", [({"solver": "glpk"}, "solver"), ({"interval": "0"}, "interval"),
                                      ({"max_step_up": "x"}, "max_step_up"), ({"gpu_steps": "2"}, "gpu_steps"),
                                      ({"gpu_slices": "0"}, "gpu_slices"),
                                      ({"gpu_steps": "0.25,1"}, "gpu_steps")])  # 0.25 is no whole unit of 1
def test_errors_name_the_key(env, key):
    with pytest.raises(ConfigError, match=key):
        AutoscalerConfig.from_env(env)


def test_the_solver_time_limit_help_says_cbc_takes_whole_seconds():
    import pulp

    from autoscaler.ilp import _solver
    from faas_infer.envconfig import field_docs

    assert "CBC takes whole seconds" in field_docs(AutoscalerConfig)["solver_time_limit"]
    assert _solver(pulp, "cbc", 0.2, 1e-3).timeLimit == 1 and _solver(pulp, "highs", 0.2, 1e-3).timeLimit == 0.2
