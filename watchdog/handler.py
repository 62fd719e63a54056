"""Loading the user's handler: ``function/handler.py`` imported as the package ``function``.

The contract (see README, "Writing a handler"):
    load() -> state                          optional; called once per process, its time is the cold start
    handle_batch(state, requests) -> list    one output per request, in order
An output is bytes, text, a JSON-able value, a ``batcher.Response``, or an exception standing for that
request alone (``batcher.BadInput`` gives 400). A module with only ``handle(request)`` (one request per
call, as classic OpenFaaS Python handlers) is served with batches of one call each.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import os
import sys
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from batcher.request import Request
from watchdog.errors import HandlerNotFound

PACKAGE = "function"


@dataclass(frozen=True)
class LoadedHandler:
    """The user's code, ready to be called with a batch."""

    # Calls the user's handle_batch (or handle, once per request) with the loaded state.
    handle: Callable[[list[Request]], list[Any]]
    # Seconds that import plus load() took: the instance's cold start.
    cold_start_seconds: float
    # The imported module (None when the handler runs in a child process).
    module: ModuleType | None
    # Ends what runs the handler (the child process), after the last batch; None when nothing needs it.
    close: Callable[[], None] | None = None
    # False while a call would wait for the handler to load (a new child process); None: always ready.
    ready: Callable[[], bool] | None = None


def load_handler(function_dir: str) -> LoadedHandler:
    """Import ``<function_dir>/handler.py`` as package ``function``, run ``load()``, wrap the entry point."""
    started = time.perf_counter()
    folder = os.path.abspath(function_dir)
    path = os.path.join(folder, "handler.py")
    if not os.path.isfile(path):
        raise HandlerNotFound(f"no handler at {path}: function_dir={function_dir!r} must hold handler.py")
    module = _import(folder)
    state = module.load() if callable(getattr(module, "load", None)) else None
    handle_batch = getattr(module, "handle_batch", None)
    handle_one = getattr(module, "handle", None)
    if callable(handle_batch):
        def handle(requests: list[Request]) -> list[Any]:
            return handle_batch(state, requests)
    elif callable(handle_one):
        one_arg = len(inspect.signature(handle_one).parameters) == 1

        def handle(requests: list[Request]) -> list[Any]:
            return [handle_one(r) if one_arg else handle_one(state, r) for r in requests]
    else:
        raise HandlerNotFound(f"{path} defines neither handle_batch(state, requests) nor handle(request)")
    return LoadedHandler(handle, time.perf_counter() - started, module)


def _import(folder: str) -> ModuleType:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    init = os.path.join(folder, "__init__.py")
    if os.path.exists(init):
        spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[folder])
    else:
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        spec.submodule_search_locations = [folder]
    if spec is None:
        raise HandlerNotFound(f"cannot import the handler package from {folder}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    if spec.loader is not None:
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.handler")
