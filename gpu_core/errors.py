"""One exception type per layer; the API maps them to HTTP codes with a JSON message."""

from __future__ import annotations


class JaikodError(Exception):
    """Base of every error the project raises on purpose."""

    http_status = 500

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class DeviceError(JaikodError):
    """The requested compute backend is not available."""


class ConfigError(JaikodError):
    """A setting or argument is invalid."""

    http_status = 422


class LakeError(JaikodError):
    """A lake path, partition or column is missing or malformed (batch layer)."""

    http_status = 422


class FeatureStoreError(JaikodError):
    """The online/offline feature store cannot serve the request."""

    http_status = 503


class RegistryError(JaikodError):
    """The model registry has no usable model for the request."""

    http_status = 503


class RegistryUnavailable(RegistryError):
    """The model registry cannot be reached or answered with an error (not: "has no such model")."""
