"""Forms of the run actions: each takes an optional reason for the admin log."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from ..conf import app_settings
from ..engine import codec
from ..engine.definitions import WorkflowDefinition, registry
from ..engine.exceptions import PayloadError, UnknownWorkflow
from ..models import WorkflowRun

REQUIRED = "Required: kept with the action and recorded with your name in the admin log."
LOGGED = "Optional: recorded with your name in the admin log (the run's HISTORY button)."


def reason_field(help_text: str = LOGGED) -> forms.CharField:
    return forms.CharField(
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=help_text,
    )


class ReasonForm(forms.Form):
    """Retry and release: nothing to choose but why."""

    reason = reason_field()


class RetryForm(forms.Form):
    """Retry a run, fenced: ``revision`` is the run's revision on the page the operator saw.

    A failed run is reopened at its failed activity: that needs a reason."""

    reason = reason_field()
    revision = forms.IntegerField(widget=forms.HiddenInput, min_value=0)

    def __init__(self, *args: Any, run: WorkflowRun, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"revision": run.revision})
        super().__init__(*args, **kwargs)
        if run.status == "failed":
            self.fields["reason"].required = True
            self.fields["reason"].help_text = REQUIRED


class BulkRetryForm(forms.Form):
    """Retry of selected runs: the revisions come as ``revision_<run id>`` fields."""

    reason = reason_field()

    def __init__(self, *args: Any, failed: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if failed:
            self.fields["reason"].required = True
            self.fields["reason"].help_text = REQUIRED


class RequiredReasonForm(forms.Form):
    """Dead-letter: the reason is required."""

    reason = forms.CharField(
        max_length=500, widget=forms.TextInput(attrs={"size": 60}), help_text=REQUIRED
    )


class CancelForm(forms.Form):
    reason = reason_field(
        "Optional: journaled with the cancellation (the workflow sees it) and recorded "
        "with your name in the admin log."
    )
    terminate = forms.BooleanField(
        required=False,
        help_text="End the run at once, without letting the workflow clean up.",
    )


def declared_signals(run: WorkflowRun) -> dict[str, Any] | None:
    """The signal contract of the run's workflow version, when the code here declares one."""
    try:
        definition: WorkflowDefinition[..., Any] = registry.workflow(
            run.workflow_name, run.workflow_version
        )
    except UnknownWorkflow:
        return None
    return definition.signals


class SignalForm(forms.Form):
    name = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"size": 40}))
    payload = forms.CharField(
        required=False,
        initial="null",
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "spellcheck": "false"}),
        help_text='JSON: a string needs quotes, e.g. "approved"; empty means null.',
    )
    dedupe_key = forms.CharField(
        max_length=255,
        required=False,
        help_text="Optional: a signal with a key already delivered to this run is dropped.",
    )
    reason = reason_field()

    def __init__(self, *args: Any, run: WorkflowRun, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contract = declared_signals(run)
        if self.contract:
            self.fields["name"].help_text = "Declared by the workflow: " + ", ".join(
                sorted(self.contract)
            )

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the signal a name.")
        problem = codec.string_problem(name)
        if problem:
            raise forms.ValidationError(f"The name {problem}.")
        if self.contract is not None and name not in self.contract:
            known = ", ".join(sorted(self.contract)) or "none"
            raise forms.ValidationError(
                f"The workflow declares no signal {name!r}; declared: {known}."
            )
        return name

    def clean_payload(self) -> Any:
        text = self.cleaned_data["payload"].strip()
        if not text:
            return None
        settings = app_settings()
        try:
            payload = json.loads(text)
        except RecursionError:
            raise forms.ValidationError(
                "The payload cannot be sent: it is nested deeper than "
                f"{settings.max_payload_depth} levels (CONTINUUM['MAX_PAYLOAD_DEPTH'])."
            ) from None
        except ValueError as exc:  # not JSON, or an int past Python's digit limit
            raise forms.ValidationError(f"The payload is not valid JSON: {exc}.") from None
        try:
            # The gate the signal passes on its way in, run here to explain a refusal.
            codec.encode(
                payload,
                what="payload",
                max_bytes=settings.MAX_PAYLOAD_BYTES,
                max_depth=settings.max_payload_depth,
            )
        except PayloadError as exc:
            raise forms.ValidationError(f"The payload cannot be sent: {exc}.") from None
        return payload

    def clean_dedupe_key(self) -> str:
        key: str = self.cleaned_data["dedupe_key"]
        problem = codec.string_problem(key)
        if problem:
            raise forms.ValidationError(f"The dedupe key {problem}.")
        return key

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        name, payload = cleaned.get("name"), cleaned.get("payload")
        expected = (self.contract or {}).get(name) if name else None
        wrong_type = isinstance(expected, type) and not isinstance(payload, expected)
        if wrong_type and "payload" not in self.errors:
            self.add_error(
                "payload",
                f"Signal {name!r} takes a {getattr(expected, '__name__', expected)}, "
                f"not a {type(payload).__name__}.",
            )
        cleaned["dedupe_key"] = cleaned.get("dedupe_key") or None
        return cleaned
