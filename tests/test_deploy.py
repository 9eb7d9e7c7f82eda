"""The Flyte environments (`_deploy`): the form server app, its image, local serving, and cluster tasks."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import flyte
import pytest
from conftest import Proc, post_json, python, request
from s3_helpers import closed_port, start_waiter

import flyteplugins.hitl as hitl
from flyteplugins.hitl._errors import ConfigurationError

with warnings.catch_warnings():
    # flyte.app imports flyte.io, whose pydantic models use a deprecated config style (flyte's, not ours).
    warnings.simplefilter("ignore", DeprecationWarning)
    import flyte.app

    from flyteplugins.hitl import _deploy

PACKAGE_DIR = Path(hitl.__file__).resolve().parent


def _print_in_subprocess(code: str, env: dict[str, str]) -> Any:
    """Run `code` in a fresh interpreter (the environments are built at import) and parse its last line as JSON."""
    proc = python("-c", code, env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


# -- the environments ---------------------------------------------------------------------------------


def test_the_app_runs_this_package_stdlib_server_with_auth() -> None:
    app = hitl.app_env
    assert isinstance(app, flyte.app.AppEnvironment)
    assert app.name == "hitl-form-server"
    assert app.args == ["python", "-m", "flyteplugins.hitl", "serve", "--port", "8080"]
    assert app.get_port().port == 8080
    assert app.requires_auth is True
    assert app.env_vars is not None and app.env_vars["FLYTE_HITL_HOST"] == "0.0.0.0"
    assert app.type is None and app._server is None, "a plain command, not a FastAPI/ASGI app"


def test_the_task_environment_depends_on_the_app_and_shares_its_image() -> None:
    assert isinstance(hitl.env, flyte.TaskEnvironment)
    assert hitl.env.depends_on == [hitl.app_env]
    assert hitl.env.image is hitl.app_env.image is _deploy.image


def test_the_image_never_installs_the_pypi_package() -> None:
    for layer in _deploy.image._layers:
        packages = getattr(layer, "packages", None) or ()
        assert not any("hitl" in p for p in packages), layer


def test_the_port_comes_from_the_importing_process_and_the_root_from_none_at_import() -> None:
    code = (
        "import json, flyteplugins.hitl as h; "
        "print(json.dumps([h.app_env.env_vars, h.env.env_vars, h.app_env.args, h.app_env.get_port().port]))"
    )
    app_vars, task_vars, args, port = _print_in_subprocess(
        code, {"FLYTE_HITL_ROOT": "s3://shared-bucket/hitl", "FLYTE_HITL_APP_PORT": "9191"}
    )
    assert app_vars == {"FLYTE_HITL_HOST": "0.0.0.0"}, "the root is not frozen in at import"
    assert not task_vars
    assert args[-2:] == ["--port", "9191"] and port == 9191

    env = {"FLYTE_HITL_ROOT": "", "FLYTE_HITL_APP_PORT": ""}
    app_vars, task_vars, args, port = _print_in_subprocess(code, env)
    assert app_vars == {"FLYTE_HITL_HOST": "0.0.0.0"} and not task_vars
    assert port == 8080


def _deployed_args() -> list[str]:
    from flyte.models import SerializationContext

    return hitl.app_env.container_args(SerializationContext(version="v1"))


def test_the_deployed_app_serves_the_root_the_deploying_process_has_when_it_deploys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # hitl.app_env was built (imported) long before: the root is read now, at deploy time.
    monkeypatch.setenv("FLYTE_HITL_ROOT", "s3://shared-bucket/hitl")
    assert _deployed_args() == [*hitl.app_env.args, "--root", "s3://shared-bucket/hitl"]
    monkeypatch.setenv("FLYTE_HITL_ROOT", "gcs://other-bucket/x/")
    assert _deployed_args()[-2:] == ["--root", "gs://other-bucket/x"]
    assert hitl.app_env.args == ["python", "-m", "flyteplugins.hitl", "serve", "--port", "8080"]


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (None, "needs FLYTE_HITL_ROOT set, in the deploying process"),
        ("", "needs FLYTE_HITL_ROOT set, in the deploying process"),
        ("/tmp/flyte/hitl", "is a local path, which the form server app's pod cannot see"),
        ("file:///data/hitl", "is a local path"),
        ("s3://", "names no bucket"),
    ],
)
def test_a_deployment_without_a_shared_root_fails_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, root: str | None, expected: str
) -> None:
    if root is None:
        monkeypatch.delenv("FLYTE_HITL_ROOT", raising=False)
    else:
        monkeypatch.setenv("FLYTE_HITL_ROOT", root)
    with pytest.raises(ConfigurationError, match="FLYTE_HITL_ROOT") as info:
        _deployed_args()
    assert expected in str(info.value)


@pytest.mark.parametrize("bad", ["http", "0", "70000"])
def test_a_bad_app_port_is_a_clear_error(bad: str) -> None:
    code = """
import json
import flyteplugins.hitl as h
try:
    h.app_env
except h.HitlError as e:
    print(json.dumps(str(e)))
"""
    message = _print_in_subprocess(code, {"FLYTE_HITL_APP_PORT": bad})
    assert message == f"FLYTE_HITL_APP_PORT must be a port number, got {bad!r}"


@pytest.mark.parametrize(("setting", "required"), [("0", False), ("off", False), ("1", True), ("", True)])
def test_the_app_login_can_be_switched_off_for_programs(setting: str, required: bool) -> None:
    code = "import json, flyteplugins.hitl as h; print(json.dumps(h.app_env.requires_auth))"
    assert _print_in_subprocess(code, {"FLYTE_HITL_APP_AUTH": setting}) is required


def test_a_bad_app_login_setting_is_a_clear_error() -> None:
    code = """
import json
import flyteplugins.hitl as h
try:
    h.app_env
except h.ConfigurationError as e:
    print(json.dumps(str(e)))
"""
    message = _print_in_subprocess(code, {"FLYTE_HITL_APP_AUTH": "maybe"})
    assert message == "FLYTE_HITL_APP_AUTH must be 1 or 0 (or true/false, yes/no, on/off), got 'maybe'"


# -- the image, built by flyte's own Dockerfile writer and applied to a directory ---------------------


def _dockerfile(image: flyte.Image, context: Path) -> str:
    from flyte._internal.imagebuild.docker_builder import _process_layer

    async def render() -> str:
        text = ""
        for layer in image._layers:
            text = await _process_layer(layer, context, text)
        return text

    return asyncio.run(render())


def test_the_image_carries_this_package_and_serves_from_it(tmp_path: Path, procs: list[Proc]) -> None:
    context, rootfs = tmp_path / "context", tmp_path / "rootfs"
    context.mkdir()
    dockerfile = _dockerfile(_deploy.image, context)
    assert "flyteplugins-hitl" not in " ".join(re.findall(r"^RUN .*$", dockerfile, re.M)), "nothing from PyPI"

    # Apply the COPY and ENV lines the way docker does.
    env: dict[str, str] = {}
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *_, src, dst = line.split()
            target = rootfs / dst.lstrip("/")
            if dst.endswith("/"):
                target = target / Path(src).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(context / src, target)
        elif line.startswith("ENV "):
            key, _, value = line.removeprefix("ENV ").partition("=")
            env[key] = value.replace("$PYTHONPATH", "/root")

    installed = rootfs / "opt/flyteplugins-hitl/flyteplugins/hitl"
    sources = sorted(p.name for p in PACKAGE_DIR.iterdir() if p.suffix == ".py" or p.name == "py.typed")
    assert sorted(p.name for p in installed.iterdir()) == sources
    for name in sources:
        assert (installed / name).read_bytes() == (PACKAGE_DIR / name).read_bytes()
    assert env["PYTHONPATH"] == "/opt/flyteplugins-hitl:/root"

    # In the container, PYTHONPATH puts this copy ahead of anything installed.
    image_path = {"PYTHONPATH": env["PYTHONPATH"].replace("/opt/", f"{rootfs}/opt/")}
    where = python("-c", "import flyteplugins.hitl as h; print(h.__file__)", env=image_path, cwd=tmp_path)
    out, _ = where.communicate(timeout=60)
    assert out.strip() == str(installed / "__init__.py")

    server = Proc(
        python("-m", "flyteplugins.hitl", "serve", "--root", str(tmp_path / "r"), "--port", "0", env=image_path)
    )
    procs.append(server)
    url = server.expect(r"^serving \S+ at (http://\S+)$").group(1)
    assert request(url, "GET", "/health").json()["status"] == "healthy"


def test_a_new_image_tag_when_the_code_changes_and_not_otherwise(tmp_path: Path) -> None:
    # The image's identity hashes the files it copies: a code change must give a new image,
    # compiled caches must not.
    copy = tmp_path / "site" / "flyteplugins" / "hitl"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = "import json, flyteplugins.hitl._deploy as d; print(json.dumps([d.__file__, d.image.uri]))"
    env = {"PYTHONPATH": str(tmp_path / "site"), "PYTHONDONTWRITEBYTECODE": "1"}

    where, first = _print_in_subprocess(code, env)
    assert where == str(copy / "_deploy.py")
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"compiled")
    assert _print_in_subprocess(code, env)[1] == first
    with (copy / "server.py").open("a") as f:
        f.write("\n# a change\n")
    assert _print_in_subprocess(code, env)[1] != first


# -- served locally: the very same AppEnvironment object ---------------------------------------------

LOCAL_SERVE = """
import sys

import flyte

import flyteplugins.hitl as hitl

handle = flyte.with_servecontext(mode="local", health_check_interval=0.1).serve(hitl.app_env)
handle.activate(wait=True)
print("ENDPOINT", handle.endpoint, handle.is_active(), flush=True)
sys.stdin.readline()
handle.deactivate(wait=True)
print("DEACTIVATED", handle.is_deactivated(), flush=True)
"""


def test_the_app_served_locally_answers_events_created_against_it(
    root: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    port = closed_port()
    # flyte starts the app's command ("python ...") from PATH; in the image that is the image's Python.
    env = {"FLYTE_HITL_APP_PORT": str(port), "PATH": f"{Path(sys.executable).parent}:{_path()}"}
    serving = Proc(python("-c", LOCAL_SERVE, env=env, cwd=tmp_path, stdin=subprocess.PIPE))
    procs.append(serving)
    match = serving.expect(r"^ENDPOINT (\S+) (\w+)$", timeout=90)
    endpoint, active = match.group(1), match.group(2)
    assert endpoint == f"http://localhost:{port}" and active == "True"
    assert request(endpoint, "GET", "/health").json()["status"] == "healthy"

    waiter, request_id, token = start_waiter(procs, endpoint)
    form = request(endpoint, "GET", f"/form/{request_id}?token={token}")
    assert form.status == 200 and "How many replicas?" in form.text
    assert post_json(endpoint, {"request_id": request_id, "token": token, "value": 3}).status == 200
    waiter.expect(r"^RESULT 3$", timeout=30)
    assert json.loads((root / request_id / "response.json").read_text())["value"] == 3

    assert serving.proc.stdin is not None
    serving.proc.stdin.write("\n")
    serving.proc.stdin.flush()
    serving.expect(r"^DEACTIVATED True$", timeout=30)
    with pytest.raises(OSError):
        request(f"http://127.0.0.1:{port}", "GET", "/health")


def _path() -> str:
    import os

    return os.environ.get("PATH", "")


# -- inside a cluster task --------------------------------------------------------------------------


class _ControlPlane(BaseHTTPRequestHandler):
    """Answers flyte's AppService/Get (Connect protocol, protobuf) with a public URL, like Flyte's control plane."""

    protocol_version = "HTTP/1.1"
    asked: list[dict[str, str]] = []  # noqa: RUF012 (one list shared by the handler instances)
    public_url = "https://hitl-form-server.apps.example.test"

    def do_POST(self) -> None:
        from flyteidl2.app import app_definition_pb2, app_payload_pb2

        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/flyteidl2.app.AppService/Get":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        app_id = app_payload_pb2.GetRequest.FromString(body).app_id
        type(self).asked.append({"project": app_id.project, "domain": app_id.domain, "name": app_id.name})
        status = app_definition_pb2.Status(ingress=app_definition_pb2.Ingress(public_url=self.public_url))
        data = app_payload_pb2.GetResponse(app=app_definition_pb2.App(status=status)).SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/proto")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def control_plane() -> Iterator[str]:
    """A local stand-in for Flyte's control plane; yields its address as task pods receive it."""
    _ControlPlane.asked = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ControlPlane)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"localhost:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


IN_CLUSTER = """
import json, sys

from flyte._context import internal_ctx
from flyte.models import ActionID, RawDataPath, TaskContext
from flyte.report import Report

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _deploy, server

scratch = sys.argv[1]
if len(sys.argv) > 2:
    _deploy.LOOKUP_SECONDS = float(sys.argv[2])
task = TaskContext(
    action=ActionID(name="a0", run_name="cluster-run", project="proj", domain="development"),
    version="v1",
    raw_data_path=RawDataPath(path=scratch),
    output_path=scratch,
    run_base_dir=scratch,
    report=Report(name="r"),
    mode="remote",
)
with internal_ctx().replace_task_context(task):
    try:
        event = hitl.new_event("ship_it", data_type=bool, prompt="Ship it?")
    except hitl.HitlError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    else:
        shown = {"endpoint": event.endpoint, "form_url": event.form_url, "embedded": sorted(server._embedded)}
        print(json.dumps(shown))
"""


def _in_cluster(tmp_path: Path, *args: str, **env: str) -> dict[str, Any]:
    base = {"FLYTE_INTERNAL_EXECUTION_PROJECT": "proj", "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development"}
    proc = python("-c", IN_CLUSTER, str(tmp_path), *args, env={**base, **env}, cwd=tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_a_cluster_task_links_to_the_deployed_app_public_url(
    s3_root: str, control_plane: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTERNAL_APP_ENDPOINT_PATTERN", raising=False)
    result = _in_cluster(tmp_path, _U_EP_OVERRIDE=control_plane)
    assert result["endpoint"] == _ControlPlane.public_url
    assert result["form_url"].startswith(f"{_ControlPlane.public_url}/form/ship_it-")
    assert result["embedded"] == [], "no form server in the task pod"
    assert _ControlPlane.asked == [{"project": "proj", "domain": "development", "name": "hitl-form-server"}]


def test_without_the_control_plane_a_cluster_task_uses_the_internal_app_url(s3_root: str, tmp_path: Path) -> None:
    result = _in_cluster(
        tmp_path,
        _U_EP_OVERRIDE=f"localhost:{closed_port()}",
        INTERNAL_APP_ENDPOINT_PATTERN="http://{app_fqdn}.hitl.svc",
    )
    assert result["endpoint"] == "http://hitl-form-server.hitl.svc"
    assert result["embedded"] == []


def test_a_cluster_task_without_any_app_url_says_to_set_the_endpoint(
    s3_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTERNAL_APP_ENDPOINT_PATTERN", raising=False)
    result = _in_cluster(tmp_path, _U_EP_OVERRIDE=f"localhost:{closed_port()}")
    assert result["error"] == "HitlError"
    assert "hitl-form-server" in result["message"] and "FLYTE_HITL_ENDPOINT" in result["message"]


@pytest.fixture
def silent_control_plane() -> Iterator[str]:
    """A control plane that accepts connections and never answers, as task pods receive its address."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"localhost:{sock.getsockname()[1]}"


@pytest.mark.parametrize("internal", [True, False], ids=["internal-url", "no-internal-url"])
def test_a_silent_control_plane_holds_event_creation_only_until_the_lookup_deadline(
    s3_root: str, silent_control_plane: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, internal: bool
) -> None:
    # Flyte's own call waits for ever on such a control plane; the task must go on with the
    # cluster-internal URL, or fail saying what to set, and the process must still end.
    monkeypatch.delenv("INTERNAL_APP_ENDPOINT_PATTERN", raising=False)
    env = {"INTERNAL_APP_ENDPOINT_PATTERN": "http://{app_fqdn}.hitl.svc"} if internal else {}
    started = time.monotonic()
    result = _in_cluster(tmp_path, "2", _U_EP_OVERRIDE=silent_control_plane, **env)
    if internal:
        assert result["endpoint"] == "http://hitl-form-server.hitl.svc"
    else:
        assert result["error"] == "HitlError"
        assert "did not answer within 2 s" in result["message"] and "FLYTE_HITL_ENDPOINT" in result["message"]
    print(f"\n[figure] silent control plane: the task went on after {time.monotonic() - started:.1f} s")


def test_a_cluster_task_refuses_a_root_local_to_its_pod(root: Path, tmp_path: Path) -> None:
    result = _in_cluster(tmp_path, _U_EP_OVERRIDE=f"localhost:{closed_port()}")
    assert result["error"] == "HitlError"
    assert str(root) in result["message"] and "shared object storage" in result["message"]
    assert not root.exists(), "nothing was written"


def test_an_explicit_endpoint_wins_in_a_cluster_task(s3_root: str, tmp_path: Path) -> None:
    result = _in_cluster(tmp_path, FLYTE_HITL_ENDPOINT="https://forms.example.test/", _U_EP_OVERRIDE="localhost:1")
    assert result["endpoint"] == "https://forms.example.test"
