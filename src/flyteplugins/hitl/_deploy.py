"""The Flyte environments: the form server as an app, and the task environment users depend on."""

from __future__ import annotations

import flyte
import flyte.app

from ._store import ROOT_ENV

APP_PORT = 8080

image = flyte.Image.from_debian_base(name="flyteplugins-hitl").with_pip_packages("flyteplugins-hitl")

app_env = flyte.app.AppEnvironment(
    name="hitl-form-server",
    description="Human-in-the-loop form server (flyteplugins.hitl, standard-library HTTP)",
    image=image,
    args=["python", "-m", "flyteplugins.hitl", "serve", "--host", "0.0.0.0", "--port", str(APP_PORT)],
    port=APP_PORT,
    requires_auth=True,
    resources=flyte.Resources(cpu=1, memory="256Mi"),
)
"""The form server as a Flyte app; it serves every event under ``FLYTE_HITL_ROOT``."""

env = flyte.TaskEnvironment(
    name="hitl",
    image=image,
    resources=flyte.Resources(cpu=1, memory="256Mi"),
    depends_on=[app_env],
)
"""Put this in your task environment's ``depends_on`` so the form server is deployed with it."""

__all__ = ["ROOT_ENV", "app_env", "env"]
