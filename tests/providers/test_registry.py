"""The catalogue of provider kinds is complete, and the engine names none of them: adding a
provider is its adapter module, its registry line and its defaults, nothing more."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from app.core.config import DEFAULT_INSTANCES, KIND_DEFAULTS, ProviderKind
from app.providers.base import ProviderResult
from app.providers.registry import TaskResult, adapter_for

ROOT = Path(__file__).resolve().parents[2]
# Everything below the provider port: none of it may know one provider from another.
ENGINE = ("polling", "schedule", "budget", "worker", "tasks", "webhooks", "archive", "overview")


@pytest.mark.parametrize("kind", list(ProviderKind))
def test_every_kind_has_its_adapter_defaults_and_instance(kind: ProviderKind) -> None:
    adapter = adapter_for(kind)
    assert adapter.kind is kind
    assert kind in KIND_DEFAULTS
    assert kind in DEFAULT_INSTANCES.values()
    module = Path(typing.cast(str, __import__(type(adapter).__module__, fromlist=["_"]).__file__))
    assert module == ROOT / "app" / "providers" / f"{kind.value}.py"


def test_every_kind_has_its_result_in_the_union() -> None:
    (union, *_) = typing.get_args(TaskResult)
    models: tuple[type[ProviderResult], ...] = typing.get_args(union)
    kinds = {typing.get_args(m.model_fields["kind"].annotation)[0] for m in models}
    assert kinds == {kind.value for kind in ProviderKind}


def test_the_engine_names_no_provider_kind() -> None:
    # Whole words: a kind such as `fal` is also the start of `false` and `fallback`.
    kinds = "|".join(re.escape(kind.value) for kind in ProviderKind)
    names = re.compile(rf"(?<![A-Za-z0-9_])(?:{kinds})(?![A-Za-z0-9_])")
    for folder in ENGINE:
        for path in sorted((ROOT / "app" / folder).rglob("*.py")):
            found = names.search(path.read_text())
            assert found is None, f"{path.relative_to(ROOT)} names {found and found.group()}"
