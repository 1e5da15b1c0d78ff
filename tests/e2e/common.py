"""Helpers shared by the booted-guest tests."""

from __future__ import annotations

import os

import pytest

from fireroute.lab.vmm import qemu_available

#: Every booted-guest test module uses these: root for namespaces and taps, QEMU to boot.
E2E_MARKS = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces/taps"),
    pytest.mark.skipif(
        not qemu_available(),
        reason="qemu-system-x86_64 missing: apt-get install --no-install-recommends "
        "qemu-system-x86",
    ),
]


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Show ``line`` on the terminal even while pytest captures output."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        print(line, flush=True)
