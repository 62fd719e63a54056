"""Importing a folder as a Python package under a name of our choosing (a handler folder, a model folder).

The folder's own ``__init__.py`` runs when it has one; without one it is a namespace-like package whose
modules import each other relatively (``from .layers import Block``), as they do once built into the
template's image, where the watchdog imports the folder as ``function``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType


def import_module_of(folder: str, package: str, module: str) -> ModuleType:
    """Register ``folder`` as package ``package`` (forgetting any earlier package of that name and its
    modules) and import ``package.module`` from it. What the folder's code raises is raised."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
    init = os.path.join(folder, "__init__.py")
    if os.path.isfile(init):
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[folder])
    else:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [folder]
    if spec is None:
        raise ImportError(f"cannot import {folder} as a package")
    sys.modules[package] = importlib.util.module_from_spec(spec)
    if spec.loader is not None:
        spec.loader.exec_module(sys.modules[package])
    return importlib.import_module(f"{package}.{module}")
