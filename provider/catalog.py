"""Which handler folder runs a deployment: the local stand-in for "pull the image".

Looked up in order: the annotation ``com.faas-infer.handler`` (a folder), the image (from stack.yml or an
earlier deploy of the same image), the function's name in stack.yml, and for autoscaler variants the
parent named by label ``com.faas-infer.parent``. Anything else is a 400 that says how to fix it.
"""

from __future__ import annotations

import os
import threading

from faas_infer.stack import LABEL_PARENT, Stack, StackError, load_stack
from provider.errors import BadRequest
from provider.types import FunctionDeployment

ANNOTATION_HANDLER = "com.faas-infer.handler"


class Catalog:
    """Image and name -> absolute handler folder; learns images as they are deployed."""

    def __init__(self, stack: Stack | None = None) -> None:
        self._lock = threading.Lock()
        self._by_image: dict[str, str] = {}
        self._by_name: dict[str, str] = {}
        if stack is not None:
            for fn in stack.functions.values():
                if fn.handler_path:
                    self._by_name[fn.name] = fn.handler_path
                    if fn.image:
                        self._by_image.setdefault(fn.image, fn.handler_path)

    @classmethod
    def from_stack_file(cls, path: str, env: dict[str, str]) -> "Catalog":
        """A catalog from ``path`` (empty path: an empty catalog)."""
        if not path:
            return cls()
        try:
            return cls(load_stack(path, env))
        except StackError as exc:
            raise ValueError(str(exc)) from None

    def resolve(self, spec: FunctionDeployment) -> str:
        """The handler folder for ``spec``, remembered for its image; ``BadRequest`` if none is known."""
        with self._lock:
            folder = (spec.annotations.get(ANNOTATION_HANDLER) or self._by_image.get(spec.image)
                      or self._by_name.get(spec.service)
                      or self._by_name.get(spec.labels.get(LABEL_PARENT, "")))
            if not folder:
                raise BadRequest(
                    f"cannot run image {spec.image} for {spec.service}: no handler folder is known for it. "
                    f"Add {spec.service} to the stack.yml given to faas-infer up, deploy an image that was "
                    f"deployed before, or set annotation {ANNOTATION_HANDLER} to the handler folder")
            folder = os.path.abspath(folder)
            if not os.path.isfile(os.path.join(folder, "handler.py")):
                raise BadRequest(f"handler folder {folder} of {spec.service} has no handler.py")
            self._by_image[spec.image] = folder
            return folder
