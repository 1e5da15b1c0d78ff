"""Fixtures for the Firecracker integration: specs and a stand-in API server.

The contract tests run against the project's description of the API part used
(``firecracker_api.json``, see ``apidesc``), so they run in any checkout. The full OpenAPI
specs live outside the repository, in ``<repo>/../shared/reference``: where they are (always
under CI), ``test_fc_apidesc.py`` checks the description against them; elsewhere that one
module is not collected.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SPEC_DIR = REPO_ROOT.parent / "shared" / "reference" / "firecracker" / "swagger"
SPEC_VERSIONS = ("1.11.0", "1.16.1")

collect_ignore = [] if SPEC_DIR.is_dir() or os.environ.get("CI") else ["test_fc_apidesc.py"]

_SPECS: dict = {}


def load_spec(version: str):
    """The described API of ``version`` (``apidesc``)."""
    if version not in _SPECS:
        from .apidesc import load

        _SPECS[version] = load(version)
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
