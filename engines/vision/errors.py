"""Errors of the vision layer: bad caller input (4xx) and unavailable runtimes (503)."""

from __future__ import annotations

from gpu_core.errors import JaikodError


class VisionInputError(JaikodError):
    """The caller sent something we cannot analyse: not an image, too big, no face, ...

    ``http_status`` is per instance: 400 (malformed), 413 (too large), 415 (unsupported format),
    422 (understood but unusable, e.g. no face found).
    """

    http_status = 422

    def __init__(self, message: str, *, field: str | None = None, http_status: int = 422):
        super().__init__(message, field=field)
        self.http_status = http_status


class VisionRuntimeError(JaikodError):
    """A runtime (TensorRT, Triton) or model file is not available here."""

    http_status = 503
