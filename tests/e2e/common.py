"""Helpers shared by the booted-guest tests."""

from __future__ import annotations

import pytest

from fireroute.lab.vmm import qemu_available
from tests.conftest import needs_root_to

#: Every booted-guest test module uses these: root for namespaces and taps, QEMU to boot.
E2E_MARKS = [
    pytest.mark.e2e,
    needs_root_to("create network namespaces/taps"),
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
