"""The user-facing providers/ folder is the package's own, so the two can never drift apart."""

from __future__ import annotations

from dgaas_flow.sites.glideinwms import SCRIPTS
from dgaas_flow.specs.loading import BUILTIN_PROVIDERS
from tests.conftest import ROOT


def test_top_level_providers_are_the_packaged_ones():
    assert (ROOT / "providers").resolve() == BUILTIN_PROVIDERS.resolve() == (ROOT / "dgaas_flow" / "providers")
    assert SCRIPTS.resolve() == BUILTIN_PROVIDERS / "glideinwms"
    assert {p.name for p in SCRIPTS.glob("*.sh")} == {"triton_setup.sh", "triton_health.sh", "triton_cleanup.sh"}


def test_public_names_are_exported_and_importable():
    import dgaas_flow

    assert sorted(dgaas_flow.__all__) == sorted(dgaas_flow._EXPORTS)
    for name in dgaas_flow.__all__:
        assert getattr(dgaas_flow, name) is not None, name
    assert dgaas_flow.__version__
