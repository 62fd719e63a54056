"""A no-op function: answers each request with its own body. Measures the platform's own ceiling."""


def handle_batch(state, requests):
    """Echo every body back with its content type."""
    from batcher import Response

    return [Response(r.body, 200, {"Content-Type": r.header("Content-Type", "application/octet-stream")})
            for r in requests]
