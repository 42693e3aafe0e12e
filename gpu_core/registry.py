"""Model-registry client: MLflow (local sqlite + file artifacts by default), aliases as the contract.

A registered model version holds a directory of artifacts (for the ranker: ``pctr.ubj``,
``pcvr.ubj``, ``meta.json``). Aliases say what serves: ``production`` (all traffic), ``staging``
(canary / candidate). The batch job registers; the online service resolves an alias to a version
and downloads its directory. The version string the service reports is ``{name}/{version}``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_core.errors import RegistryError
from gpu_core.settings import get_settings

log = logging.getLogger(__name__)
RANKER = "jaikod-ranker"
PRODUCTION = "production"
STAGING = "staging"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    alias: str | None
    source: str
    run_id: str | None
    metrics: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


class Registry:
    def __init__(self, tracking_uri: str | None = None):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        import mlflow
        from mlflow.tracking import MlflowClient

        settings = get_settings()
        self.tracking_uri = tracking_uri or settings.tracking_uri
        self.artifact_root = (settings.home / "mlflow" / "artifacts").resolve()
        self.mlflow = mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if self.tracking_uri.startswith("sqlite:"):
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            return self.client.create_experiment(name, artifact_location=self.artifact_root.as_uri())
        return self.client.create_experiment(name)

    def register_dir(self, name: str, run_id: str, artifact_path: str, tags: dict[str, str] | None = None) -> ModelRef:
        """Register the artifact dir ``artifact_path`` of run ``run_id`` as a new version of ``name``."""
        try:
            self.client.get_registered_model(name)
        except Exception:
            self.client.create_registered_model(name)
        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri}/{artifact_path}"
        mv = self.client.create_model_version(name, source=source, run_id=run_id, tags=tags or {})
        return self._ref(name, mv, None)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(name, alias)
        except Exception:
            pass

    def get(self, name: str, alias: str) -> ModelRef | None:
        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except Exception:
            return None
        return self._ref(name, mv, alias)

    def require(self, name: str, alias: str) -> ModelRef:
        ref = self.get(name, alias)
        if ref is None:
            raise RegistryError(f"no version of model {name!r} has alias {alias!r} (tracking {self.tracking_uri})")
        return ref

    def versions(self, name: str) -> list[ModelRef]:
        try:
            mvs = self.client.search_model_versions(f"name='{name}'")
        except Exception:
            return []
        return sorted((self._ref(name, mv, None) for mv in mvs), key=lambda r: int(r.version))

    def aliases(self, name: str) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(name).aliases)
        except Exception:
            return {}

    def download(self, ref: ModelRef, dst: Path | None = None) -> Path:
        """Local directory holding the version's artifacts."""
        if ref.source.startswith("file://"):
            from urllib.parse import unquote, urlparse

            p = Path(unquote(urlparse(ref.source).path))
            if p.is_dir():
                return p
        out = self.mlflow.artifacts.download_artifacts(artifact_uri=ref.source, dst_path=str(dst) if dst else None)
        return Path(out)

    def _ref(self, name: str, mv: Any, alias: str | None) -> ModelRef:
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except Exception:
                metrics = {}
        return ModelRef(name, str(mv.version), alias, mv.source, mv.run_id, metrics)
