"""The README tells the truth about what the code does."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from app.blobs.views import ArchivedFile, ArchiveState
from app.core.config import DEFAULT_INSTANCES, KIND_DEFAULTS, ProviderKind
from app.providers.base import CallbackSigning
from app.providers.registry import adapter_for
from app.webhooks.events import EVENT_DESCRIPTIONS, EventType, WebhookEvent

README = Path(__file__).resolve().parents[1] / "README.md"


def table(header: str) -> dict[str, str]:
    """The README table under this header row: first column (a `code` name) -> second."""
    lines = README.read_text().split(header + "\n", 1)[1].splitlines()[1:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        match = re.match(r"\| `([^`]+)` \| (.+?) \|$", line)
        assert match, line
        rows[match.group(1)] = match.group(2)
    return rows


def test_every_event_type_is_listed_with_its_description() -> None:
    rows = table("| Type | Sent when |")
    assert rows == {event.value: when for event, when in EVENT_DESCRIPTIONS.items()}


def test_the_event_examples_are_valid_webhook_bodies() -> None:
    """The full example is a body the code accepts as its own, and so is each type's variant
    of it: README examples cannot drift from the payload's schema."""
    text = README.read_text()
    [full] = re.findall(
        r"^```json\n(\{\n  \"type\": \"task\..*?)^```$", text, re.MULTILINE | re.DOTALL
    )
    body = json.loads(full)
    WebhookEvent.model_validate(body)
    variants = dict(
        re.findall(r"^\| `(task\.[a-z_]+)` \| (?:Jimmy: )?`(\{.*\})`", text, re.MULTILINE)
    )
    # Every type but the test event, which carries no task.
    assert set(variants) == {event.value for event in EVENT_DESCRIPTIONS} - {EventType.TEST}
    for event_type, changed in variants.items():
        data = {**body["data"], **json.loads(changed)}
        if data["result"] is not None and data["result"]["kind"] == "jimmy_soundclone":
            data["provider"] = "jimmy"
        event = WebhookEvent.model_validate({**body, "type": event_type, "data": data})
        if event_type == "task.archived":  # not a status change: it follows a success
            assert event.data.status.value == "succeeded"
        elif event_type != "task.succeeded":
            assert event.data.status.value == event_type.removeprefix("task."), event_type


def test_the_archive_example_has_the_shape_consumers_get() -> None:
    """The Archive section's task: its `archive` and each file it lists are what the API
    and webhooks show (the files it elides with `…` aside)."""
    text = README.read_text().split("## Archive\n", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"^```json\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    task = json.loads(example)
    ArchiveState.model_validate(task["archive"])
    first, *elided = task["result"]["archive"]
    ArchivedFile.model_validate(first)
    assert [f["kind"] for f in [first, *elided]] == ["audio", "subtitle", "extra"]


def test_the_built_in_instances_table_states_their_defaults() -> None:
    """The README's table of the six later instances: each one's kind, host, rate, cadence
    and deadline as `KIND_DEFAULTS` has them, and its callbacks as its adapter verifies them."""
    header = (
        "| Instance (kind) | `base_url` | `rate_limit_per_s` | first / min / max poll (s) "
        "| `deadline_s` | Callbacks |"
    )
    lines = README.read_text().split(header + "\n", 1)[1].splitlines()[1:]
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines))
    shown = {}
    for line in rows:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)` \(`(\w+)`\)", cells[0])
        assert match, line
        shown[match.group(1)] = (match.group(2), cells[1:])
    later = {n: k for n, k in DEFAULT_INSTANCES.items() if n not in ("minimax", "jimmy")}
    assert set(shown) == set(later)
    for name, (kind, (base_url, rate, cadence, deadline, callbacks)) in shown.items():
        defaults = KIND_DEFAULTS[ProviderKind(kind)]
        assert later[name] is ProviderKind(kind)
        assert base_url == f"`{defaults['base_url']}`"
        assert float(rate.split()[0]) == defaults["rate_limit_per_s"]
        polls = [float(x) for x in cadence.split(" / ")]
        assert polls == [
            defaults["first_poll_delay_s"],
            defaults["min_poll_interval_s"],
            defaults["max_poll_interval_s"],
        ]
        assert int(deadline.split()[0]) == defaults["deadline_s"]
        signing = adapter_for(ProviderKind(kind)).callbacks
        expected = {
            CallbackSigning.NONE: "none",
            CallbackSigning.TOKEN: "token",
            CallbackSigning.STANDARD_WEBHOOKS: "Standard Webhooks",
        }[signing]
        assert callbacks.startswith(expected), (name, callbacks)
