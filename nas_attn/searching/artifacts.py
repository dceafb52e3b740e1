"""The artifact store of a runs folder: trial previews, curves and model.py files, finalize's
per-case picture (what optuna-dashboard serves beside the studies)."""
from __future__ import annotations

import shutil
from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore

from ..atomic import atomic_file


def artifact_dir_for(runs_dir: Path) -> Path:
    """One artifact store for every study of a runs folder (what the dashboard serves)."""
    return (Path(runs_dir) / "artifacts").resolve()


class AtomicArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, writing each artifact under a temporary name (its
    own writes in place: a full disk left a truncated artifact behind)."""

    def write(self, artifact_id: str, content_body) -> None:
        with atomic_file(self._get_filepath(artifact_id)) as f:
            shutil.copyfileobj(content_body, f)


def artifact_store(runs_dir: Path) -> AtomicArtifactStore:
    """The runs folder's artifact store, its folder created."""
    folder = artifact_dir_for(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return AtomicArtifactStore(str(folder))
