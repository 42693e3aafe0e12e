"""The compiled-trees side of the scoring benchmark; runs in the trees virtualenv (bench/peers/setup.sh
trees: treelite + tl2cgen, gcc), imports nothing of this project.

    .venv-trees/bin/python bench/peers/trees_client.py WORKDIR

WORKDIR (written by bench/bench_scaling.py) holds ``spec.json`` (the models: XGBoost JSON files already
cut to the trees serving uses; repetitions) and ``X.npy`` (the scoring stage's own matrix). Each model is
compiled to C by tl2cgen (gcc -O2, one translation unit), loaded, and timed on X with one thread;
writes ``trees.json`` (timings, compile times, versions) and ``trees_preds.npz`` (the predictions).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def main(work: Path) -> None:
    import tl2cgen
    import treelite

    spec = json.loads((work / "spec.json").read_text())
    X = np.load(work / "X.npy")
    out, preds = {"treelite": treelite.__version__, "tl2cgen": tl2cgen.__version__, "models": {}}, {}
    predictors = {}
    for m in spec["models"]:
        tm = treelite.frontend.load_xgboost_model(m["path"])
        lib = work / f"{m['name']}.so"
        t0 = time.perf_counter()
        tl2cgen.export_lib(tm, toolchain="gcc", libpath=str(lib), params={"parallel_comp": 1}, nthread=1)
        compile_s = time.perf_counter() - t0
        predictors[m["name"]] = tl2cgen.Predictor(str(lib), nthread=1)
        out["models"][m["name"]] = {"compile_s": round(compile_s, 2), "trees": tm.num_tree}
    for _ in range(spec["warmup"]):
        for p in predictors.values():
            p.predict(tl2cgen.DMatrix(X, dtype="float32"))
    lat_both = []
    for _ in range(spec["n"]):
        t0 = time.perf_counter()
        for p in predictors.values():  # DMatrix built per call, as a server would per request
            p.predict(tl2cgen.DMatrix(X, dtype="float32"))
        lat_both.append((time.perf_counter() - t0) * 1000)
    for name, p in predictors.items():
        preds[name] = np.asarray(p.predict(tl2cgen.DMatrix(X, dtype="float32")), np.float32).reshape(-1)
    out["latencies_ms"] = lat_both
    np.savez(work / "trees_preds.npz", **preds)
    (work / "trees.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
