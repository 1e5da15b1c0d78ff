"""The booted-guest tests' one shared fixture: the guest image, built (or found in the cache)
once per run."""

from __future__ import annotations

import time

import pytest

from fireroute.lab.guest import GuestImage, ensure_guest_image
from tests.e2e.common import report


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest) -> GuestImage:
    started = time.monotonic()
    built = ensure_guest_image(progress=lambda msg: report(request, f"[guest image] {msg}"))
    report(request, f"[guest image] {built.kernel.parent} in {time.monotonic() - started:.2f}s")
    return built
