"""Model-registry client: MLflow (local sqlite + file artifacts by default), aliases as the contract.

A registered model version holds a directory of artifacts (for the ranker: :class:`RankerArtifact`,
``pctr.ubj``, ``pcvr.ubj``, ``meta.json``, written and read only here). Aliases say what serves:
``production`` (all traffic), ``staging`` (canary / candidate), ``previous`` (what rollback restores),
``rejected`` (a staging version the canary turned down). The batch job registers; the online service
resolves an alias to a version and downloads its directory. The version string the service reports is
``{name}/{version}``. Alias moves are :func:`promote`, :func:`rollback` and :func:`reject`, used by the
CLI, the trainer and the canary alike.

"Absent" and "unreachable" are different answers: :meth:`Registry.get` returns ``None`` only when the
registry says the model or alias does not exist; any other failure raises
:class:`~gpu_core.errors.RegistryUnavailable`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_core.checksums import ArtifactCorrupt, check, sha256_file
from gpu_core.errors import RegistryError, RegistryUnavailable
from gpu_core.settings import Settings, get_settings

log = logging.getLogger(__name__)
RANKER = "jaikod-ranker"
PRODUCTION = "production"
STAGING = "staging"
PREVIOUS = "previous"
REJECTED = "rejected"
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _absent(exc: BaseException) -> bool:
    """Did MLflow answer "no such model / version / alias" (rather than fail)?"""
    return getattr(exc, "error_code", None) in _NOT_FOUND and "not found" in str(exc).lower()


def _unavailable(what: str, uri: str, exc: BaseException) -> RegistryUnavailable:
    return RegistryUnavailable(f"model registry unavailable ({uri}) while {what}: {str(exc).splitlines()[0][:200]}",
                               field="registry")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    alias: str | None
    source: str
    run_id: str | None
    metrics: dict[str, float]
    created_ms: int | None = None  # when the version was registered (epoch ms)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


class Registry:
    def __init__(self, tracking_uri: str | None = None, settings: Settings | None = None):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        import mlflow
        from mlflow.tracking import MlflowClient

        settings = settings or get_settings()
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
        try:
            self.client.set_registered_model_alias(name, alias, str(version))
        except Exception as exc:
            if _absent(exc):
                raise RegistryError(f"model {name!r} has no version {version!r}", field="version") from None
            raise _unavailable(f"setting alias {alias}", self.tracking_uri, exc) from exc

    def delete_alias(self, name: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(name, alias)
        except Exception as exc:
            if not _absent(exc):
                raise _unavailable(f"deleting alias {alias}", self.tracking_uri, exc) from exc

    def get(self, name: str, alias: str) -> ModelRef | None:
        """The version behind ``alias``; None when the model or the alias does not exist."""
        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except Exception as exc:
            if _absent(exc):
                return None
            raise _unavailable(f"resolving {name}@{alias}", self.tracking_uri, exc) from exc
        return self._ref(name, mv, alias)

    def version(self, name: str, version: str) -> ModelRef:
        """A version by number; a :class:`RegistryError` naming ``version`` when it does not exist."""
        try:
            mv = self.client.get_model_version(name, str(version))
        except Exception as exc:
            if _absent(exc):
                raise RegistryError(f"model {name!r} has no version {version!r}", field="version") from None
            raise _unavailable(f"reading {name}/{version}", self.tracking_uri, exc) from exc
        return self._ref(name, mv, None)

    def require(self, name: str, alias: str) -> ModelRef:
        ref = self.get(name, alias)
        if ref is None:
            raise RegistryError(f"no version of model {name!r} has alias {alias!r} (tracking {self.tracking_uri})")
        return ref

    def versions(self, name: str) -> list[ModelRef]:
        try:
            mvs = self.client.search_model_versions(f"name='{name}'")
        except Exception as exc:
            if _absent(exc):
                return []
            raise _unavailable(f"listing versions of {name}", self.tracking_uri, exc) from exc
        return sorted((self._ref(name, mv, None) for mv in mvs), key=lambda r: int(r.version))

    def aliases(self, name: str) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(name).aliases)
        except Exception as exc:
            if _absent(exc):
                return {}
            raise _unavailable(f"reading aliases of {name}", self.tracking_uri, exc) from exc

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
            except Exception as exc:  # a version whose run was deleted still serves; metrics are display only
                if not _absent(exc):
                    raise _unavailable(f"reading the run of {name}/{mv.version}", self.tracking_uri, exc) from exc
        created = getattr(mv, "creation_timestamp", None)
        return ModelRef(name, str(mv.version), alias, mv.source, mv.run_id, metrics,
                        int(created) if created is not None else None)


# ---- alias moves: the one implementation (CLI, trainer, canary) ---------------------------------------
def promote(registry: Registry, version: str | None = None, name: str = RANKER) -> tuple[str, str | None]:
    """The staging version (or ``version``) becomes production; the old production becomes ``previous``
    and a promoted staging alias is removed. Returns (new production, old production). Nothing to
    promote (no staging, no version) is a :class:`RegistryError` and changes nothing."""
    if version is None:
        staging = registry.get(name, STAGING)
        if staging is None:
            raise RegistryError(f"nothing to promote: model {name!r} has no {STAGING!r} version", field="version")
        version = staging.version
    else:
        version = registry.version(name, str(version)).version
    prev = registry.get(name, PRODUCTION)
    if prev is not None and prev.version == version:
        raise RegistryError(f"version {version} of {name!r} is already in production", field="version")
    registry.set_alias(name, PRODUCTION, version)
    if prev is not None:
        registry.set_alias(name, PREVIOUS, prev.version)
    staging = registry.get(name, STAGING)
    if staging is not None and staging.version == version:
        registry.delete_alias(name, STAGING)  # nothing left to canary
    return version, prev.version if prev is not None else None


def rollback(registry: Registry, name: str = RANKER) -> str:
    """``previous`` becomes production again (and the current production becomes ``previous``)."""
    prev = registry.get(name, PREVIOUS)
    if prev is None:
        raise RegistryError(f"nothing to roll back to: model {name!r} has no {PREVIOUS!r} version", field="version")
    cur = registry.get(name, PRODUCTION)
    registry.set_alias(name, PRODUCTION, prev.version)
    if cur is not None:
        registry.set_alias(name, PREVIOUS, cur.version)
    return prev.version


def reject(registry: Registry, version: str, name: str = RANKER) -> None:
    """The canary turned ``version`` down: it leaves staging and is marked ``rejected``."""
    registry.delete_alias(name, STAGING)
    registry.set_alias(name, REJECTED, version)


# ---- the ranker's artifact: written by training, read by serving, replay and evaluation -------------------
RANKER_FILES = {"ctr": "pctr.ubj", "cvr": "pcvr.ubj"}
RANKER_META = "meta.json"


@dataclass(frozen=True)
class RankerArtifact:
    """pCTR and pCVR boosters (only the trees early stopping kept) with the feature list they expect."""

    ctr: Any  # xgboost.Booster
    cvr: Any
    features: tuple[str, ...]
    meta: dict[str, Any]

    @staticmethod
    def best_iterations(booster: Any) -> int:
        """Trees to use (0 = all): ``best_iteration + 1`` when early stopping set it."""
        return int(booster.attributes().get("best_iteration", -1)) + 1

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.ctr.save_model(folder / RANKER_FILES["ctr"])
        self.cvr.save_model(folder / RANKER_FILES["cvr"])
        files = {f: sha256_file(folder / f) for f in RANKER_FILES.values()}  # verified before a load
        (folder / RANKER_META).write_text(json.dumps({**self.meta, "features": list(self.features), "files": files},
                                                     indent=2))
        return folder

    @staticmethod
    def read_meta(folder: Path) -> dict[str, Any] | None:
        """The artifact's metadata (``as_of``, metrics, features) without loading the boosters."""
        p = Path(folder) / RANKER_META
        return json.loads(p.read_text()) if p.exists() else None

    @classmethod
    def load(cls, folder: Path, expected_features: Sequence[str], *, device: str = "cpu",
             nthread: int | None = None) -> RankerArtifact:
        """Read a ranker directory; a :class:`RegistryError` when files are missing or unreadable or the
        model expects other features than ``expected_features`` (the caller's schema)."""
        import xgboost as xgb

        folder = Path(folder)
        try:
            meta = json.loads((folder / RANKER_META).read_text())
            if isinstance(meta.get("files"), dict):  # a truncated or damaged booster is refused unread
                check(folder, meta["files"], f"ranker artifact at {folder}")
            boosters = []
            for key in ("ctr", "cvr"):
                b = xgb.Booster()
                b.load_model(folder / RANKER_FILES[key])
                params: dict[str, Any] = {"device": device}
                if nthread is not None:
                    params["nthread"] = nthread
                b.set_param(params)
                boosters.append(b)
        except (OSError, ValueError, KeyError, AttributeError, ArtifactCorrupt, xgb.core.XGBoostError) as exc:
            raise RegistryError(f"ranker artifact at {folder} is missing or unreadable: {exc}",
                                field="model") from exc
        features = tuple(meta.get("features", ()))
        if features != tuple(expected_features):
            raise RegistryError(f"ranker at {folder} expects other features than this schema "
                                f"({len(features)} vs {len(expected_features)})", field="features")
        return cls(boosters[0], boosters[1], features, meta)
