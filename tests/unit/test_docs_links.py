"""The documentation holds together: every relative link between its pages (and to the files
they name) resolves, an anchor names a heading of its page, and the README stays short and
opens with the two-command quick start that CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "tests" / "README.md", ROOT / "bench" / "RESULTS.md"]
    + list((ROOT / "docs").glob("*.md"))
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
README_MAX_LINES = 200


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a link inside one is not a link)."""
    return FENCE.sub("", page.read_text())


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", prose(page), re.M)}


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page)) if not re.match(r"[a-z]+:", t)]


def test_the_pages_exist_and_have_links():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    for page in ("README.md", "docs/host.md", "docs/isolation.md", "docs/cni.md",
                 "docs/daemon.md", "docs/firecracker.md", "docs/repair.md",
                 "tests/README.md", "bench/RESULTS.md"):  # fmt: skip
        assert page in names, f"{page} is missing"
    assert len(links(ROOT / "README.md")) >= 9  # the control: the link reader finds links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_a_broken_link_is_seen(tmp_path: Path):
    """The negative control: the same reader on a page with a missing file and a missing
    heading reports both, and a good link beside them is not reported."""
    (tmp_path / "a.md").write_text("# Here\n\n[x](b.md) [y](#nowhere) [z](#here)\n")
    page = tmp_path / "a.md"
    found = links(page)
    assert found == ["b.md", "#nowhere", "#here"]
    assert not (tmp_path / "b.md").exists()
    assert "nowhere" not in anchors(page) and "here" in anchors(page)


def test_slug_is_githubs():
    assert slug("The real Firecracker (`tests/realvmm`)") == "the-real-firecracker-testsrealvmm"
    assert slug("A FORWARD policy of DROP (Docker)") == "a-forward-policy-of-drop-docker"


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_opens_with_the_two_command_quick_start():
    text = (ROOT / "README.md").read_text()
    first_section = re.search(r"^## (.+)$", text, re.M)
    assert first_section and first_section.group(1) == "Quick start"
    block = re.search(r"^```sh\n(.*?)^```", text[first_section.end() :], re.S | re.M)
    assert block, "no command block in the quick start"
    commands = block.group(1).splitlines()
    assert len(commands) == 2, commands
    assert commands[0].endswith("fireroute demo")
    assert commands[1] == "bash scripts/test.sh"  # what CI runs (.ci/run)
