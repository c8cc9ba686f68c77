"""docs/reference/ is what `dgaas-flow schema ... --markdown` makes of the models: a field added,
renamed or re-described without regenerating the docs fails here."""

from __future__ import annotations

import pytest

from dgaas_flow.specs.reference import markdown
from tests.conftest import ROOT


@pytest.mark.parametrize("which", ["workflow", "provider"])
def test_reference_matches_the_models(which):
    page = ROOT / "docs" / "reference" / f"{which}.md"
    assert page.read_text() == markdown(which) + "\n", (
        f"{page} is stale: run `dgaas-flow schema {which} --markdown > {page.relative_to(ROOT)}`")


def test_every_field_is_described():
    for which in ("workflow", "provider"):
        rows = [line for line in markdown(which).splitlines() if line.startswith("| `")]
        undescribed = [row for row in rows if row.endswith("|  |")]
        assert not undescribed, undescribed
