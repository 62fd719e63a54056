"""Image classifier. Input: raw bytes (3*64*64 uint8, CHW) as application/octet-stream, or JSON
{"pixels": [12288 ints 0..255]} (whatever its Content-Type). Output: {"class": int, "score": float}."""

import torch

from batcher import BadInput
from batcher.handlers import map_valid, require

from .model import CHANNELS, SIZE, build_model

PIXELS = CHANNELS * SIZE * SIZE
# The GPU when torch sees one (the python3-torch-batch-gpu image on a GPU share; a CPU variant is shown none),
# else the CPU: docker/kubernetes/gpu-stack.yml serves this handler on a GPU.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load():
    """Build the model once per process, on DEVICE."""
    return build_model().to(DEVICE)


def _json(request) -> bool:
    """JSON when it says so, or when it is not said to be bytes, is not an image and looks like an object
    (curl -d sends it as a form, faas-cli as text/plain); a raw image is exactly PIXELS bytes whatever its
    first byte."""
    kind = (request.header("Content-Type") or "").lower()
    if kind.startswith("application/json"):
        return True
    if kind.startswith("application/octet-stream") or len(request.body) == PIXELS:
        return False
    return request.body.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{"


def parse(request):
    if _json(request):
        pixels = require(request.json(), "pixels", list)
        if len(pixels) != PIXELS or not all(isinstance(p, int) and 0 <= p <= 255 for p in pixels):
            raise BadInput(f"'pixels' must hold {PIXELS} integers in 0..255")
        flat = torch.tensor(pixels, dtype=torch.uint8)
    else:
        if len(request.body) != PIXELS:
            raise BadInput(f"raw image must be {PIXELS} bytes (3x64x64 uint8), got {len(request.body)}")
        flat = torch.frombuffer(bytearray(request.body), dtype=torch.uint8)
    return flat.view(CHANNELS, SIZE, SIZE).float().div_(255.0)


def handle_batch(model, requests):
    """Classify every valid image in one forward pass."""
    def run(images):
        with torch.inference_mode():
            score, cls = model(torch.stack(images).to(DEVICE)).softmax(dim=1).max(dim=1)
        return [{"class": c, "score": round(s, 6)} for c, s in zip(cls.tolist(), score.tolist())]

    return map_valid(requests, parse, run)
