"""Fixtures for the Firecracker integration: specs and a stand-in API server.

The OpenAPI specs live outside the repository, in ``<repo>/../shared/reference``;
tests that need them skip when that directory is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SPEC_DIR = REPO_ROOT.parent / "shared" / "reference" / "firecracker" / "swagger"
SPEC_VERSIONS = ("1.11.0", "1.16.1")

_SPECS: dict = {}


def load_spec(version: str):
    """The parsed spec for ``version``; skips the test when it is not available."""
    path = SPEC_DIR / f"firecracker-v{version}.yaml"
    if not path.is_file():
        pytest.skip(f"Firecracker OpenAPI spec not found at {path} (shared/reference absent)")
    pytest.importorskip("yaml", reason="PyYAML is needed to read the Firecracker spec")
    if version not in _SPECS:
        from .specschema import Spec

        _SPECS[version] = Spec.load(path)
    return _SPECS[version]


@pytest.fixture(params=SPEC_VERSIONS)
def spec(request):
    return load_spec(request.param)


@pytest.fixture
def spec_new():
    return load_spec("1.16.1")


@pytest.fixture
def spec_old():
    return load_spec("1.11.0")


def _standin(spec):
    from .standin import FirecrackerStandin

    return FirecrackerStandin(spec).start()


@pytest.fixture
def standin(spec):
    """A stand-in Firecracker for each spec version."""
    server = _standin(spec)
    yield server
    server.stop()


@pytest.fixture
def standin_new(spec_new):
    server = _standin(spec_new)
    yield server
    server.stop()


@pytest.fixture
def standin_old(spec_old):
    server = _standin(spec_old)
    yield server
    server.stop()


@pytest.fixture
def client(standin):
    from fireroute.firecracker.client import FirecrackerClient

    return FirecrackerClient(standin.socket_path, timeout=5.0)
