"""JAIKOD_STACK: one switch picks every backend's default, an explicit backend setting wins, and a chosen
backend without its address is a one-line ConfigError naming the address setting (pure settings logic)."""

from __future__ import annotations

import pytest

from gpu_core.errors import ConfigError
from gpu_core.settings import BACKEND_ADDRESSES, STACK_BACKENDS, Settings, configure, reset_settings

FULL_ADDRESSES = {"kafka_bootstrap": "127.0.0.1:9092", "milvus_uri": "http://127.0.0.1:19530",
                  "opensearch_url": "http://127.0.0.1:9200"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("STACK", "EVENT_BUS", "VECTOR_BACKEND", "KEYWORD_BACKEND", "STREAM_ENGINE", *map(str.upper, FULL_ADDRESSES)):
        monkeypatch.delenv(f"JAIKOD_{name}", raising=False)
    yield
    reset_settings()


def _backends(s: Settings) -> dict[str, str]:
    return {name: getattr(s, name) for name in STACK_BACKENDS if name in Settings.model_fields}


def test_each_stack_selects_its_backends():
    assert _backends(Settings()) == {n: v["embedded"] for n, v in STACK_BACKENDS.items() if n in Settings.model_fields}
    full = Settings(stack="full", **FULL_ADDRESSES)
    assert _backends(full) == {n: v["full"] for n, v in STACK_BACKENDS.items() if n in Settings.model_fields}
    assert full.event_bus == "kafka" and full.vector_backend == "milvus"


def test_explicit_backend_wins_over_the_stack(monkeypatch):
    s = Settings(stack="full", vector_backend="faiss", **FULL_ADDRESSES)
    assert s.vector_backend == "faiss" and s.event_bus == "kafka"
    monkeypatch.setenv("JAIKOD_STACK", "embedded")
    monkeypatch.setenv("JAIKOD_VECTOR_BACKEND", "milvus")  # the environment counts as explicit too
    monkeypatch.setenv("JAIKOD_MILVUS_URI", FULL_ADDRESSES["milvus_uri"])
    s = Settings()
    assert s.vector_backend == "milvus" and s.event_bus == "redis"


@pytest.mark.parametrize("address", sorted(a for a in FULL_ADDRESSES if a in Settings.model_fields))
def test_full_stack_without_an_address_is_a_one_line_config_error(address):
    given = {k: v for k, v in FULL_ADDRESSES.items() if k != address and k in Settings.model_fields}
    with pytest.raises(ConfigError) as err:
        Settings(stack="full", **given)
    assert err.value.field == address
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{address}: required when")
    assert f"JAIKOD_{address.upper()}" in str(err.value)


def test_explicit_backend_needs_its_address_on_the_embedded_stack_too():
    with pytest.raises(ConfigError, match="^milvus_uri: required when vector_backend=milvus"):
        Settings(vector_backend="milvus")


def test_configure_with_a_new_stack_re_resolves_unset_backends():
    base = Settings(**FULL_ADDRESSES)
    assert base.vector_backend == "faiss"
    s = configure(base, stack="full")
    assert s.vector_backend == "milvus" and s.event_bus == "kafka"
    pinned = configure(Settings(vector_backend="faiss", **FULL_ADDRESSES), stack="full")
    assert pinned.vector_backend == "faiss"  # set explicitly before: still wins


def test_every_address_named_is_a_setting_or_waits_for_its_backend():
    """The tables name settings other issues add (keyword_backend, stream_engine): each address that
    exists is an optional string; each backend field that exists accepts both of its stack values."""
    for (backend, value), address in BACKEND_ADDRESSES.items():
        assert value in STACK_BACKENDS[backend].values()
        if address in Settings.model_fields:
            assert Settings.model_fields[address].default is None
    for backend, per_stack in STACK_BACKENDS.items():
        if backend in Settings.model_fields:
            args = Settings.model_fields[backend].annotation.__args__
            assert set(per_stack.values()) <= set(args)


def test_flink_stream_engine_needs_the_kafka_bus():
    assert Settings(stack="full", **FULL_ADDRESSES).stream_engine == "flink"
    assert Settings().stream_engine == "ours"
    with pytest.raises(ConfigError) as err:
        Settings(stack="full", event_bus="redis", **FULL_ADDRESSES)
    assert err.value.field == "stream_engine" and "event_bus=redis" in str(err.value)
    with pytest.raises(ConfigError) as err:  # one line per missing address, however many backends need it
        Settings(stream_engine="flink", event_bus="kafka")
    assert str(err.value).count("kafka_bootstrap: required") == 1
    assert Settings(stack="full", stream_engine="ours", event_bus="redis",
                    **FULL_ADDRESSES).stream_engine == "ours"
