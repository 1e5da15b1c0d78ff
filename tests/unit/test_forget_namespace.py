"""A namespace's deleter forgets every record fireroute keeps for it (kernel/forwarding.py):
forwarding's, IPv6's, accept_ra's and each uplink's proxy_ndp, and no other namespace's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fireroute.kernel import forwarding


def test_every_record_of_the_namespace_goes_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    records = tmp_path / "run"
    records.mkdir()
    monkeypatch.setattr(forwarding, "DIR", str(records))
    netns = tmp_path / "ns"
    netns.write_text("")
    inode = os.stat(netns).st_ino
    mine = ["ip_forward", "ip6_forward", "ip6_accept_ra", "ip6_proxy_ndp.up0", "ip6_proxy_ndp.eth1"]
    for name in mine:
        (records / f"{name}-{inode}").write_text("1 0\n")
    others = [f"ip_forward-{inode + 1}", f"ip6_proxy_ndp.up0-{inode}0"]  # another namespace's
    for name in others:
        (records / name).write_text("1 0\n")
    forwarding.forget_namespace(str(netns))
    assert sorted(os.listdir(records)) == sorted(others)
    forwarding.forget_namespace(str(tmp_path / "gone"))  # a namespace already gone: nothing
    assert sorted(os.listdir(records)) == sorted(others)
