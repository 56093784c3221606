"""Shared pytest fixtures. Keep them generic: other test modules build on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hub_server import HubServer  # tests/ is on sys.path (rootdir conftest, no __init__.py)

from u2eval.resources import sample_dir


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The bundled synthetic sample (u2eval/sample), in the exact U2-Bench folder layout."""
    return sample_dir()


@pytest.fixture
def make_hub_server() -> Iterator[Callable[..., HubServer]]:
    """A factory of running Hub stand-ins: ``make_hub_server(folder, token=..., refs=...)``; all stopped after."""
    servers: list[HubServer] = []

    def make(folder: Path, **kwargs: object) -> HubServer:
        server = HubServer(folder, **kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def hub_server(make_hub_server: Callable[..., HubServer], sample_root: Path) -> HubServer:
    """The Hub stand-in serving the bundled sample as DolphinAI/u2-bench."""
    return make_hub_server(sample_root)


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hub_server: HubServer) -> Path:
    """A private Hugging Face environment aimed at ``hub_server``: fresh HF_HOME, no token, online.

    huggingface_hub also fetches an "agent harness" registry from its import-time endpoint once per process;
    it is pinned to empty here so no test can reach the real Hub.
    """
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from huggingface_hub.utils import _detect_agent
    except ImportError:  # an older huggingface_hub: no registry to pin
        return home
    if hasattr(_detect_agent, "_registry"):
        monkeypatch.setattr(_detect_agent, "_registry", getattr(_detect_agent, "_EMPTY_REGISTRY", {}))
    return home
