"""What this package relies on that flyte does not promise (`_flyte`), checked against the installed flyte.

When one of these fails after upgrading flyte, the named private interface changed: adapt `_flyte.py`
(and only it) before widening the flyte bound in pyproject.toml. Tests elsewhere use a few more of
flyte's internals to set up or inspect what they test (``flyte._context.internal_ctx`` for a task
context, ``docker_builder._process_layer`` to render the image); they are listed here too.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import pathlib
import warnings

import pytest
from packaging.requirements import Requirement

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _flyte

with warnings.catch_warnings():
    # flyte.app imports flyte.io, whose pydantic models use a deprecated config style (flyte's, not ours).
    warnings.simplefilter("ignore", DeprecationWarning)
    import flyte.app


def test_flyte_is_within_the_bound_this_package_declares() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    declared = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    (flyte_req,) = [r for r in declared if r.name == "flyte"]
    assert flyte_req.specifier.contains(importlib.metadata.version("flyte")), flyte_req
    assert not flyte_req.specifier.contains("3.0"), "flyte is bounded below its next major version"


# -- obstore, through flyte.storage ---------------------------------------------------------------


def test_flyte_requires_obstore_so_it_is_there_wherever_flyte_is() -> None:
    names = {Requirement(r).name for r in importlib.metadata.requires("flyte") or [] if "extra ==" not in r}
    assert "obstore" in names


@pytest.mark.parametrize("root", ["s3://bucket/hitl", "gs://bucket/hitl", "abfs://container/hitl"])
def test_object_store_builds_an_obstore_store_through_flyte_storage(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Building a store sends nothing; Azure wants an account name even for that.
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
    import flyte.storage

    filesystem = flyte.storage.get_underlying_filesystem(path=root)
    assert callable(getattr(filesystem, "_construct_store", None)), "obstore's fsspec store lost _construct_store"
    store = _flyte.object_store(root, "bucket" if "://bucket" in root else "container", timeout=3, connect_timeout=2)
    for method in ("get", "put", "head", "list", "list_with_delimiter"):
        assert callable(getattr(store, method, None)), f"obstore stores lost .{method}()"
    assert "mode" in inspect.signature(store.put).parameters, "put(..., mode='create') is the create-only write"
    assert store.client_options["timeout"] == "3s" and store.retry_config["max_retries"] == 0


def test_obstore_errors_are_exception_classes() -> None:
    errors = _flyte.obstore_errors()
    assert issubclass(errors.base, Exception) and issubclass(errors.transient, errors.base)
    assert all(issubclass(kind, errors.base) for kind in errors.exists)


# -- the app's internal URL -----------------------------------------------------------------------


def test_the_internal_app_url_pattern_is_the_variable_flyte_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte.app._app_environment import INTERNAL_APP_ENDPOINT_PATTERN_ENV_VAR

    monkeypatch.setenv(INTERNAL_APP_ENDPOINT_PATTERN_ENV_VAR, "http://{app_fqdn}.hitl.svc")
    assert _flyte.internal_app_endpoint("hitl-form-server") == "http://hitl-form-server.hitl.svc"
    source = inspect.getsource(flyte.app.AppEnvironment)
    assert "INTERNAL_APP_ENDPOINT_PATTERN_ENV_VAR" in source, "flyte's own apps still use this pattern"
    monkeypatch.delenv(INTERNAL_APP_ENDPOINT_PATTERN_ENV_VAR)
    assert _flyte.internal_app_endpoint("hitl-form-server") is None


# -- the report -----------------------------------------------------------------------------------


def test_current_report_is_none_outside_a_task() -> None:
    assert _flyte.current_report() is None


def test_current_report_is_the_running_task_report(tmp_path: pathlib.Path) -> None:
    from flyte._context import internal_ctx
    from flyte.models import ActionID, RawDataPath, TaskContext
    from flyte.report import Report

    report = Report(name="r")
    task = TaskContext(
        action=ActionID(name="a0", run_name="run", project="p", domain="d"),
        version="v1",
        raw_data_path=RawDataPath(path=str(tmp_path)),
        output_path=str(tmp_path),
        run_base_dir=str(tmp_path),
        report=report,
        mode="local",
    )
    with internal_ctx().replace_task_context(task):
        assert _flyte.current_report() is report


# -- deploying: flyte's app serializer asks the app for its arguments ------------------------------


def test_flyte_deploys_the_app_with_the_arguments_container_args_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte.app._runtime.app_serde import get_proto_container
    from flyte.models import SerializationContext

    monkeypatch.setenv("FLYTE_HITL_ROOT", "s3://shared-bucket/hitl")
    source_root = pathlib.Path(hitl.__file__).resolve().parents[2]
    container = get_proto_container(hitl.app_env, SerializationContext(version="v1", root_dir=source_root))
    assert list(container.args)[-2:] == ["--root", "s3://shared-bucket/hitl"]
    assert "flyteplugins.hitl._deploy:app_env" in list(container.command), "the app is found again in its pod"


# -- per-attempt numbering ------------------------------------------------------------------------


def test_occurrence_numbers_per_task_context_and_starts_again_for_a_new_attempt() -> None:
    import flyte.report
    from flyte.models import ActionID, RawDataPath, TaskContext

    def context() -> TaskContext:
        action = ActionID(name="a0", run_name="r")
        return TaskContext(
            action=action,
            version="v",
            raw_data_path=RawDataPath(path="/tmp"),
            output_path="/tmp",
            run_base_dir="/tmp",
            report=flyte.report.Report(name="r"),
        )

    first, retry = context(), context()
    assert [_flyte.occurrence(first, "approve") for _ in range(3)] == [1, 2, 3]
    assert _flyte.occurrence(first, "other") == 1
    assert _flyte.occurrence(retry, "approve") == 1, "a new attempt's context counts from the start"
    grouped = first.replace(data={"group": "g"})
    assert _flyte.occurrence(grouped, "approve") == 4, "a copy for a group shares its action's numbering"
