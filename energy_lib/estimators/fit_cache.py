"""Fitted per-layer models as plain numpy arrays, cached on disk.

Why: every papermill kernel is a fresh process. Refitting the Getzner trees there took ~2 s, and
even *loading* a pickled scikit-learn model costs ~1 s on a 2-vCPU VM, because unpickling
imports scikit-learn. A prediction sums ~20 layers, so it needs only the trees' split tables:
after fitting, each model is exported to arrays (`TreeEnsemble`, `ScaledLinear`) that predict
with numpy alone, and those arrays are what is cached -- an .npz read with allow_pickle=False,
so a tampered cache file cannot run code, and a cold kernel never imports scikit-learn.

The cache key hashes the fitting data's bytes, the fitting code's source and the
scikit-learn version: any change refits. A cache file that cannot be read (truncated, corrupt,
another format) is refitted and replaced; a cache folder that cannot be written, or a folder
where the cache file should be, only costs the refit. Files are written to a temporary name and
renamed; the temporary file is removed when that fails.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import atomic_write
from .layer_fit import LayerFit, TypeModel

FORMAT = "energy-lib-fit-v2"  # v2: a model per compute dtype


def cache_dir() -> Path:
    """The user's cache folder (XDG_CACHE_HOME, else ~/.cache) / energy_lib / fits. A relative
    XDG_CACHE_HOME is ignored, as the XDG Base Directory spec asks: it would put the cache
    wherever the process happens to run."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or "")
    if not base.is_absolute():
        base = Path.home() / ".cache"
    return base / "energy_lib" / "fits"


def fit_key(data: list[bytes]) -> str:
    """Hash of the data's bytes, the fitting code and the scikit-learn version."""
    digest = hashlib.sha256(FORMAT.encode())
    try:
        digest.update(metadata.version("scikit-learn").encode())
    except metadata.PackageNotFoundError:
        digest.update(b"no-sklearn")
    here = Path(__file__).resolve().parent
    for name in ("regression.py", "layer_fit.py", "layer_data.py", "reference.py", "fit_cache.py"):
        digest.update((here / name).read_bytes())
    for chunk in data:
        digest.update(hashlib.sha256(chunk).digest())
    return digest.hexdigest()[:24]


class TreeEnsemble:
    """A fitted HistGradientBoostingRegressor (squared error) as flat node arrays: all trees'
    nodes concatenated, child indices made global. Predicts as sklearn's TreePredictor does:
    go left when x <= threshold, or when x is NaN and the node sends missing values left."""

    FIELDS = ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value", "roots",
              "baseline")

    def __init__(self, feature, threshold, missing_left, left, right, is_leaf, value, roots, baseline):
        self.feature, self.threshold = np.asarray(feature, np.int64), np.asarray(threshold, float)
        self.missing_left = np.asarray(missing_left, bool)
        self.left, self.right = np.asarray(left, np.int64), np.asarray(right, np.int64)
        self.is_leaf, self.value = np.asarray(is_leaf, bool), np.asarray(value, float)
        self.roots, self.baseline = np.asarray(roots, np.int64), np.asarray(baseline, float)

    @classmethod
    def from_sklearn(cls, model) -> "TreeEnsemble":
        parts, roots, offset = [], [], 0
        for (tree,) in model._predictors:  # one tree per iteration for a regressor
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not exported")
            roots.append(offset)
            parts.append((nodes["feature_idx"], nodes["num_threshold"], nodes["missing_go_to_left"],
                          nodes["left"].astype(np.int64) + offset,
                          nodes["right"].astype(np.int64) + offset, nodes["is_leaf"], nodes["value"]))
            offset += len(nodes)
        columns = [np.concatenate(c) for c in zip(*parts)]
        return cls(*columns, roots, np.ravel(model._baseline_prediction))

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        while True:
            inner = ~self.is_leaf[node]
            if not inner.any():
                break
            values = x[rows, self.feature[node]]
            go_left = np.where(np.isnan(values), self.missing_left[node], values <= self.threshold[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.baseline[0] + self.value[node].sum(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.FIELDS}


class ScaledLinear:
    """(terms / scale) @ coef: the small-data model's fitted form (no intercept)."""

    FIELDS = ("scale", "coef")

    def __init__(self, scale, coef):
        self.scale, self.coef = np.asarray(scale, float), np.asarray(coef, float)

    def predict(self, terms: np.ndarray) -> np.ndarray:
        return (np.asarray(terms, float) / self.scale) @ self.coef

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.FIELDS}


PREDICTORS = {"trees": TreeEnsemble, "nnls": ScaledLinear}


def save(path: Path, layer_fit: LayerFit) -> bool:
    """Write a LayerFit's arrays and facts atomically; False when the folder is not writable."""
    arrays, models = {}, []
    for index, model in enumerate(layer_fit.models.values()):
        for name, values in model.regressor.arrays().items():
            arrays[f"{index}/{name}"] = values
        arrays[f"{index}/lows"] = model.lows.to_numpy(float)
        arrays[f"{index}/highs"] = model.highs.to_numpy(float)
        models.append({"layer_type": model.layer_type, "phase": model.phase,
                       "dtype": model.dtype, "family": model.family,
                       "columns": model.columns, "smear": model.smear, "report": model.report})
    meta = {"format": FORMAT, "source": layer_fit.source, "machine": layer_fit.machine,
            "reference_j": layer_fit.reference_j, "models": models}
    arrays["meta"] = np.array(json.dumps(meta))

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as out:  # a handle: np.savez would add ".npz" to a name
            np.savez(out, **arrays)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)  # the temporary file is removed on every failure
        return True
    except OSError:
        return False


def load(path: Path) -> LayerFit | None:
    """The LayerFit stored at `path`, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FORMAT:
            return None
        models = {}
        for index, m in enumerate(meta["models"]):
            kind = PREDICTORS[m["family"]]
            regressor = kind(*(arrays[f"{index}/{name}"] for name in kind.FIELDS))
            lows = pd.Series(arrays[f"{index}/lows"], index=m["columns"])
            highs = pd.Series(arrays[f"{index}/highs"], index=m["columns"])
            models[(m["layer_type"], m["phase"], m["dtype"])] = TypeModel(
                m["layer_type"], m["phase"], m["dtype"], m["family"], regressor, list(m["columns"]),
                float(m["smear"]), lows, highs, dict(m["report"]))
        return LayerFit(models, meta["source"], meta["machine"], meta.get("reference_j"))
    except Exception:  # noqa: BLE001 - any unreadable cache (truncated, corrupt, old) is refitted
        return None


def cached(label: str, data: list[bytes], fit):
    """The fit for `data` from the cache, else `fit()` -- saved for the next process.
    Returns (LayerFit, "cache" | "fitted")."""
    path = cache_dir() / f"{label}-{fit_key(data)}.npz"
    if path.is_file():
        found = load(path)
        if found is not None:
            return found, "cache"
    layer_fit = fit()
    save(path, layer_fit)
    return layer_fit, "fitted"
