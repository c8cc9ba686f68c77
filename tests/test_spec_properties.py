"""Property-based: random and mutated workflow and provider files never produce a traceback, only a
valid spec or a UserError that names the file (the CLI turns it into exit status 2)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgaas_flow.errors import UserError
from dgaas_flow.specs import load_provider, load_workflow
from tests.conftest import DIGITS, WORKFLOW

GOOD = yaml.safe_load(WORKFLOW.read_text())
FOLDER = Path(tempfile.mkdtemp(prefix="dgaas-props-"))
(FOLDER / "model_repository").symlink_to(DIGITS / "model_repository")
(FOLDER / "data").symlink_to(DIGITS / "data")

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from paths(value, (*prefix, key))


ALL_PATHS = list(paths(GOOD))


def mutate(tree, path, value, drop):
    if not path:
        return value
    copy = dict(tree)
    head, *rest = path
    if drop and not rest:
        copy.pop(head, None)
    else:
        copy[head] = mutate(copy[head], tuple(rest), value, drop) if isinstance(copy.get(head), dict) and rest \
            else value
    return copy


def load_text(text: str, loader) -> None:
    path = FOLDER / "workflow.yaml"
    path.write_text(text)
    try:
        loader(path)
    except UserError as exc:
        assert str(path) in str(exc)


quick = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(st.sampled_from(ALL_PATHS), values, st.booleans())
def test_mutated_workflows_load_or_say_what_is_wrong(digits_data, path, value, drop):
    load_text(yaml.safe_dump(mutate(GOOD, path, value, drop)), load_workflow)


@quick
@given(st.text(max_size=300))
def test_arbitrary_text_is_never_a_traceback(digits_data, text):
    load_text(text, load_workflow)
    load_text(text, load_provider)


@quick
@given(st.dictionaries(st.sampled_from(["kind", "partition", "walltime", "gpus_per_node", "max_blocks",
                                        "workers_per_node", "requirements", "launcher", "bogus"]),
                       values, max_size=6))
def test_random_provider_profiles_load_or_say_what_is_wrong(provider):
    load_text(yaml.safe_dump({"provider": provider}), load_provider)
