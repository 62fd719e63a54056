"""``faas-infer`` subcommands of the COP profiler."""

COMMANDS = {"profile": "cop_profiler.profile_command", "predict": "cop_profiler.predict_command"}
