"""The project's description of the Firecracker API (``firecracker_api.json``) is exactly what
the full OpenAPI specs say about the paths and definitions it covers, so the contract tests
that run against it cannot drift from Firecracker. Collected where the specs are (always under
CI, which has ``../shared`` beside the checkout); ``FIREROUTE_UPDATE_GOLDEN=1`` rewrites the
file from them and fails, so that the diff is reviewed."""

from __future__ import annotations

import json
import os

import pytest

from .apidesc import DESCRIPTION, PATHS, describe, dumps
from .conftest import SPEC_DIR, SPEC_VERSIONS
from .specschema import Spec


def full_spec(version: str) -> Spec:
    path = SPEC_DIR / f"firecracker-v{version}.yaml"
    assert path.is_file(), f"the full Firecracker spec is missing: {path}"
    return Spec.load(path)


def test_the_description_is_what_the_specs_say():
    derived = {v: describe(full_spec(v).document) for v in SPEC_VERSIONS}
    if os.environ.get("FIREROUTE_UPDATE_GOLDEN"):
        assert not os.environ.get("CI"), "the description is never rewritten in CI"
        DESCRIPTION.write_text(dumps(derived))
        pytest.fail(f"{DESCRIPTION.name} rewritten: review it with git diff, then rerun")
    assert json.loads(DESCRIPTION.read_text()) == derived, (
        f"{DESCRIPTION.name} differs from the specs in {SPEC_DIR}: rerun with "
        "FIREROUTE_UPDATE_GOLDEN=1 and review the diff"
    )


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_every_path_described_is_in_the_spec(version):
    """A path dropped from a spec would silently leave the description; the stand-in answers
    only what is described."""
    spec = full_spec(version)
    assert [p for p in PATHS if p not in spec.document["paths"]] == []


def test_a_changed_fact_is_caught():
    """Negative control for the comparison: one pattern changed in a copy of a spec."""
    document = json.loads(json.dumps(full_spec("1.16.1").document))
    document["definitions"]["NetworkInterface"]["properties"]["guest_mac"]["pattern"] = "x"
    assert describe(document) != json.loads(DESCRIPTION.read_text())["1.16.1"]
