"""Versions side by side: new runs start on the newest, each run pins its version and hash."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_django import UnknownWorkflow, workflow
from continuum_django.engine.definitions import Registry, registry
from continuum_django.engine.exceptions import RegistrationError
from continuum_django.testing import WorkflowEnvironment
from tests.testapp import versioned


def test_several_versions_of_one_name_are_registered_and_the_newest_wins() -> None:
    assert registry.workflow("tests.versioned", 1) is versioned.versioned_v1
    assert registry.workflow("tests.versioned", 2) is versioned.versioned_v2
    assert registry.workflow("tests.versioned") is versioned.versioned_v2
    with pytest.raises(UnknownWorkflow, match=r"no workflow 'tests\.versioned' version 3"):
        registry.workflow("tests.versioned", 3)


def test_new_runs_start_on_the_newest_and_record_its_hash() -> None:
    env = WorkflowEnvironment()
    newest = env.start("tests.versioned", 5)
    pinned = env.start(versioned.versioned_v1, 5)
    assert newest.result() == ["v2:5"]
    assert pinned.result() == ["v1-first:5", "v1-second:5"]
    for run, definition in ((newest, versioned.versioned_v2), (pinned, versioned.versioned_v1)):
        started = run.history()[0].payload
        assert (started["version"], started["version_hash"]) == (
            definition.version,
            definition.version_hash,
        )
    assert versioned.versioned_v1.version_hash != versioned.versioned_v2.version_hash


def test_one_version_registered_twice_by_different_code_is_refused() -> None:
    with pytest.raises(RegistrationError, match="version 2 is registered twice"):

        @workflow(name="tests.versioned", version=2)
        def impostor(ctx: Any) -> None:
            return None


@pytest.mark.parametrize("bad", [0, -1, "2", True, 1.5])
def test_version_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(RegistrationError, match="positive int"):
        workflow(name="tests.bad_version", version=bad)


def test_a_registry_without_the_version_says_which_it_has() -> None:
    only_v2 = Registry()
    only_v2.add_workflow(versioned.versioned_v2)
    with pytest.raises(UnknownWorkflow, match=r"known: tests\.versioned v2$"):
        only_v2.workflow("tests.versioned", 1)
