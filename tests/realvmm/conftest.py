"""Fixtures of the real-VMM tests: the probe guest (built once per run) and a lab per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realvmm.harness import Lab, build_probe, firecracker_bin


@pytest.fixture(scope="session")
def probe_elf() -> Path:
    return build_probe()


@pytest.fixture
def lab(probe_elf: Path, tmp_path: Path) -> Iterator[Lab]:
    from fireroute.lab.sandbox import Sandbox

    with Sandbox(prefix="frvm") as sb:
        sb.state = tmp_path / "state.db"
        lab = Lab(sb, tmp_path / "vmm", firecracker_bin(), probe_elf)
        try:
            yield lab
        finally:
            lab.close()
