"""The one CLI: --help everywhere, exit code != 0 and one clear line on bad arguments or paths."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from jaikod_cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["world"], ["batch"], ["model"], ["world", "build"], ["batch", "nightly"],
                                  ["serve"], ["replay"]])
def test_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_unknown_world_size_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["world", "build", "--size", "huge", "--out", str(tmp_path / "lake")])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--size" in lines[0] and "huge" in lines[0]
    assert not (tmp_path / "lake").exists()


def test_unreadable_lake_is_one_clear_line(tmp_path, jaikod_env):
    result = runner.invoke(app, ["batch", "embed", "--lake", str(tmp_path / "missing")])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "missing" in lines[0]


def test_world_build_tiny_prints_summary(tmp_path):
    out = tmp_path / "lake"
    result = runner.invoke(app, ["world", "build", "--size", "tiny", "--seed", "2", "--out", str(out), "--no-images"])
    assert result.exit_code == 0, result.output
    assert (out / "events").is_dir() and (out / "products").exists()
    assert "tiny" in result.output


def test_registry_mistakes_are_one_line_and_change_nothing(world_env):
    from gpu_core.registry import RANKER, Registry

    before = Registry().aliases(RANKER)
    for args in (["model", "promote", "7"], ["model", "promote"]):
        result = runner.invoke(app, args)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert Registry().aliases(RANKER) == before  # nothing to promote changes nothing


def test_model_status_without_a_registry_creates_nothing(tmp_path, jaikod_env):
    result = runner.invoke(app, ["model", "status"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "no model registry under" in lines[0]
    assert not (jaikod_env / "mlflow").exists()


def test_the_cli_finds_the_checkout_state_from_any_directory(monkeypatch, tmp_path):
    from pathlib import Path

    import jaikod_cli

    monkeypatch.delenv("JAIKOD_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert jaikod_cli.default_home() == Path(jaikod_cli.__file__).resolve().parent / "var"
    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path))
    assert jaikod_cli.default_home() is None  # the environment wins


@pytest.mark.parametrize("args,names", [(["--engine", "spark"], "--engine"),
                                        (["--engine", "flink"], "JAIKOD_KAFKA_BOOTSTRAP")])
def test_stream_engine_mistakes_are_one_clear_line(jaikod_env, monkeypatch, args, names):
    monkeypatch.delenv("JAIKOD_KAFKA_BOOTSTRAP", raising=False)
    result = runner.invoke(app, ["stream", *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and names in lines[0]
