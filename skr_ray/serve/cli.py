"""`skr serve [-c cluster/serve.yaml] [--model ID=PATH ...] [--port 8000] [--host 127.0.0.1] [--no-auth]`: the Serve
app on local Ray. API keys come from the config's ``auth`` (an environment variable or a file), else from
``SKR_API_KEYS``; ``--no-auth`` is for local use and is announced loudly on a non-loopback host."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


def load_serve_args(config: str | None, models: list[str]) -> dict[str, Any]:
    """Application args from a Serve config file (its first application's ``args``) plus --model."""
    args: dict[str, Any] = {}
    if config:
        data = yaml.safe_load(Path(config).read_text()) or {}
        apps = data.get("applications") or [{}]
        args = dict(apps[0].get("args") or {})
    extra = {}
    for item in models:
        if "=" not in item:
            raise ValueError(f"--model expects ID=PATH, got {item!r}")
        model_id, path = item.split("=", 1)
        extra[model_id] = path
    if extra:
        args["models"] = {**(args.get("models") or {}), **extra}
    if not args.get("models"):
        default = Path("runs/demo")
        args["models"] = {"skr-demo-ir": str(default)}
    return args


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_main(config: str | None, models: list[str], port: int, host: str = "127.0.0.1", no_auth: bool = False) -> int:
    import ray
    from ray import serve

    from skr_ray.serve.app import build_app
    from skr_ray.serve.registry import RegistryError

    try:
        args = load_serve_args(config, models)
        if no_auth:
            args["auth"] = {**(args.get("auth") or {}), "disabled": True}
        app = build_app(args)
    except (RegistryError, ValueError, FileNotFoundError) as exc:
        print(f"skr: serve error: {exc}", file=sys.stderr)
        return 1
    if (args.get("auth") or {}).get("disabled") and host not in LOOPBACK:
        print(f"skr: WARNING: authentication is OFF and the app listens on {host}:{port}: anyone who can reach "
              "this address can call every model. Use it only on a trusted network, or configure auth.api_keys_env "
              "/ auth.api_keys_file.", file=sys.stderr)
    ray.init(ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="skr", route_prefix="/")
    log.info("serving %s on http://localhost:%d (GET /v1/models); Ctrl-C stops", sorted(args["models"]), port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
