"""The Serve application: a FastAPI ingress composing one SKR backbone deployment per base model.

    build_app({"models": {"fin-ir": "runs/demo", "fin-ad": "runs/tatqa_ad/train/checkpoint"}})

Adapters of one base model share its backbone deployment (multiplexed); checkpoints of another base
model (say an OD adapter of a vision-language model) get a second backbone deployment in the same app.

Referenced by ``import_path: skr_ray.serve.app:build_app`` in cluster/serve.yaml, and started
locally by ``skr serve``.
"""


import base64
import binascii
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from ray import serve
from ray.serve.handle import DeploymentHandle

from skr_ray.serve.backbone import SKRBackbone
from skr_ray.serve.registry import ModelEntry, build_registry
from skr_ray.serve.schemas import ClassifyRequest, DetectRequest, EmbeddingRequest, SearchRequest
from skr_ray.serve.search import SKRIndex

log = logging.getLogger(__name__)

api = FastAPI(title="skr_ray", description="SKR heads: embeddings, answerability, detection")


def _error(status: int, message: str, code: str) -> JSONResponse:
    kind = "requests" if status == 429 else "invalid_request_error" if status < 500 else "server_error"  # OpenAI's
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": code}})


@api.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (body parse errors, 404, 405)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail), "code": "bad_request"}
    response = _error(exc.status_code, detail["message"], detail["code"])
    response.headers.update(exc.headers or {})  # Retry-After on 503
    return response


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(x) for x in e['loc'] if x != 'body')}: {e['msg']}" for e in exc.errors()]
    return _error(400, "invalid request body: " + "; ".join(parts), "invalid_body")


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unforeseen: 500 in the documented shape with an error id; the details go to the log only."""
    import uuid

    error_id = uuid.uuid4().hex[:12]
    log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error; error id {error_id} (details in the server log)", "internal_error")


RETRY_AFTER_S = 1
"""What a 503 (replica gone, its queue full, the ingress at its bound) or a 504 tells a client to wait before retrying; the OpenAI client and most
HTTP clients honour it."""


def _fail(status: int, message: str, code: str) -> HTTPException:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (503, 504) else None
    return HTTPException(status_code=status, detail={"message": message, "code": code}, headers=headers)


_REPLICA_GONE = ("BackPressure", "Unavailable", "ActorDied", "RayActorError", "ActorUnschedulable",
                 "RequestCancelled")
"""Exception names that mean the replica was full, died or is being replaced: 503 with Retry-After (a retry
reaches a live replica), not 500."""


async def _awaited(response: Any) -> Any:
    return await response


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


OPEN_PATHS = ("/healthz",)  # answered without a key (load balancers probe it)


DEFAULT_KEYS_ENV = "SKR_API_KEYS"
"""Where the keys come from when the config names no source."""


def load_api_keys(auth: dict[str, Any]) -> list[str] | None:
    """SHA-256 digests of the API keys named by the ``auth`` options (the keys never travel in the app's
    config), or None when authentication is explicitly disabled for local use.

    ``auth.api_keys_env``: an environment variable holding comma-separated keys; ``auth.api_keys_file``: a file
    with one key per line (# comments allowed); ``auth.disabled: true``: no keys (local use only). With none of
    them, the keys come from ``SKR_API_KEYS`` when it is set (the README's quick start: ``export SKR_API_KEYS=...;
    skr serve --model ...``).
    """
    import hashlib
    import os

    auth = dict(auth or {})
    if not auth and os.environ.get(DEFAULT_KEYS_ENV, "").strip():
        auth = {"api_keys_env": DEFAULT_KEYS_ENV}
    if "api_keys" in auth or any(k.startswith("sk-") for k in map(str, auth.values())):
        raise ValueError("auth: put keys in a file or an environment variable, never in the config itself")
    auth.pop("requests_per_minute", None)  # a limit, not a key source (see requests_per_minute)
    unknown = set(auth) - {"api_keys_env", "api_keys_file", "disabled"}
    if unknown:
        raise ValueError(f"auth: unknown option(s) {sorted(unknown)}; known: api_keys_env, api_keys_file, disabled, "
                         "requests_per_minute")
    if auth.get("disabled"):
        if auth.get("api_keys_env") or auth.get("api_keys_file"):
            raise ValueError("auth: disabled is true but keys are configured too; choose one")
        return None
    keys: list[str] = []
    if auth.get("api_keys_env"):
        name = str(auth["api_keys_env"])
        if name not in os.environ:
            raise ValueError(f"auth.api_keys_env: environment variable {name} is not set")
        keys += [k.strip() for k in os.environ[name].split(",") if k.strip()]
    if auth.get("api_keys_file"):
        path = Path(str(auth["api_keys_file"])).expanduser()
        if not path.is_file():
            raise ValueError(f"auth.api_keys_file: {path} does not exist")
        keys += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not keys:
        raise ValueError(f"Serve needs API keys: export {DEFAULT_KEYS_ENV}=key1,key2, or set auth.api_keys_env "
                         "(comma-separated keys in an environment variable) or auth.api_keys_file (one key per "
                         "line); for local use only, auth.disabled: true (skr serve --no-auth)")
    return sorted({hashlib.sha256(k.encode()).hexdigest() for k in keys})


def requests_per_minute(auth: dict[str, Any] | None) -> int:
    """``auth.requests_per_minute``: each API key's limit for the app (each ingress replica keeps its even share),
    answered with 429 beyond it (0 or absent: no limit)."""
    value = (auth or {}).get("requests_per_minute", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"auth.requests_per_minute must be a whole number >= 0 (0: no limit), got {value!r}")
    return value


def _key_digest(header: str | None, digests: list[str]) -> str | None:
    """The accepted key's digest, or None. The sent key is hashed and compared digest to digest in constant time
    (hmac.compare_digest), against every accepted digest, so the answer's timing tells nothing about which
    characters matched."""
    import hashlib
    import hmac

    if not header or not header.startswith("Bearer "):
        return None
    digest = hashlib.sha256(header[len("Bearer "):].strip().encode()).hexdigest()
    match = None
    for d in digests:
        if hmac.compare_digest(digest, d):
            match = d
    return match


def _key_ok(header: str | None, digests: list[str]) -> bool:
    return _key_digest(header, digests) is not None


access_log = logging.getLogger("skr_ray.serve.access")


@api.middleware("http")
async def _guard(request: Request, call_next: Any) -> Any:
    """Before any routing or parsing: the API key (401), its rate limit (429), the body size from its header
    (413/411), then the replica's admission bound (503 with Retry-After at once when ``max_in_flight`` model
    requests are already inside). Every request gets one access-log line with the key's id (a digest prefix,
    never the key)."""
    import time

    from skr_ray.serve import guard

    start = time.perf_counter()
    who = "-"
    response = None
    if request.url.path not in OPEN_PATHS and guard.CONFIG["digests"] is not None:
        digest = _key_digest(request.headers.get("authorization"), guard.CONFIG["digests"])
        if digest is None:
            response = _error(401, "missing or invalid API key: send 'Authorization: Bearer KEY'", "invalid_api_key")
        else:
            who = guard.key_id(digest)
            wait = guard.LIMITER.admit(digest)
            if wait is not None:
                response = _error(429, f"rate limit of {guard.LIMITER.app_limit} requests per minute "
                                  f"reached for key {who}; retry after {guard.retry_after_header(wait)} s",
                                  "rate_limit_exceeded")
                response.headers["Retry-After"] = guard.retry_after_header(wait)
    if response is None:
        response = _size_check(request)
    if response is None and request.method == "POST":  # model work: bounded, shed at once beyond the bound
        bound = guard.IN_FLIGHT  # the one this request entered, whatever configure() does meanwhile
        ticket = bound.enter()  # a fixed bound: the adaptive one, steered by latencies, is the backbone replica's
        if ticket is not None:
            try:
                response = await call_next(request)
            finally:
                bound.leave(ticket)
        else:
            response = _error(503, f"server overloaded: {bound.limit} requests in flight on this "
                              f"replica; retry after {RETRY_AFTER_S} s", "overloaded")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
    elif response is None:
        response = await call_next(request)
    access_log.info("%s %s %d key=%s %.1fms", request.method, request.url.path, response.status_code, who,
                    1000 * (time.perf_counter() - start))
    return response


def _size_check(request: Request) -> JSONResponse | None:
    from skr_ray.serve.guard import CONFIG

    if request.method == "POST":
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return _error(411, "send the body with a Content-Length header", "length_required")
        if int(length) > CONFIG["max_request_bytes"]:
            return _error(413, f"request body has {length} bytes; the limit is {CONFIG['max_request_bytes']}",
                          "request_too_large")
    return None


@serve.deployment(name="Api")
@serve.ingress(api)
class Api:
    def __init__(self, backbones: dict[str, DeploymentHandle], entries: dict[str, ModelEntry],
                 options: dict[str, Any], bases: dict[str, Any] | None = None,
                 index: DeploymentHandle | None = None) -> None:
        self.backbones = backbones
        self.entries = entries
        self.index = index  # SKRIndex: the corpus indexes of the models that have one (POST /v1/search)
        # Token counts for the limits are taken here, with each base model's own tokenizer: one backbone call per
        # request instead of two (loaded on first use; without it the backbone counts).
        self.bases = bases or {}
        self.tokenizers: dict[str, Any] = {}
        self.max_input_tokens = int(options.get("max_input_tokens", 512))
        self.max_inputs = int(options.get("max_inputs_per_request", 256))
        self.max_image_bytes = int(options.get("max_image_bytes", 20 * 2**20))
        self.max_input_chars = int(options.get("max_input_chars", 32_000))  # checked before any tokenizing
        self.max_image_pixels = int(options.get("max_image_pixels", 40_000_000))  # from the header, before decoding
        self.request_timeout_s = float(options.get("request_timeout_s", 120.0))  # per backbone call: 504 after
        from skr_ray.serve import guard  # through sys.modules: the module the middleware reads

        guard.configure(options.get("_key_digests"),  # None: authentication disabled
                        int(options.get("max_request_bytes", 32 * 2**20)), int(options.get("_requests_per_minute", 0)),
                        int(options.get("max_in_flight", 0)), options.get("_requests_per_minute_app"))

    def _entry(self, model: str, route: str, task_route: str | None = None) -> ModelEntry:
        """The served model ``model`` if ``route`` may use it (``task_route``: the route whose task it must have,
        when ``route`` is not a task's own)."""
        from skr_ray.tasks import task_for_route

        task = task_for_route(task_route or route).name  # the registry says which task's checkpoints a route serves
        entry = self.entries.get(model)
        if entry is None:
            raise _fail(404, f"unknown model {model!r}; GET /v1/models lists {sorted(self.entries)}", "model_not_found")
        if entry.task != task:
            raise _fail(400, f"model {model!r} is {_article(entry.task)} {entry.task} model; {route} needs "
                             f"{_article(task)} {task} model", "wrong_task")
        if entry.objective != "head":
            raise _fail(400, f"model {model!r} is an SFT baseline (it answers through generated text, without a task "
                             f"head); {route} serves SKR checkpoints with a {task} head", "wrong_task")
        return entry

    async def _call(self, model: str, method: str, *args: Any) -> Any:
        from skr_ray.serve.guard import Shed

        handle = self.backbones[self.entries[model].backbone].options(multiplexed_model_id=model)
        answer = await self._bounded(getattr(handle, method).remote(*args), method, model)
        if isinstance(answer, Shed):  # beyond the backbone replica's adaptive bound: shed, at once
            raise _fail(503, f"server overloaded: the model replica is running {answer.inside} requests, "
                             f"{answer.wait_s:.2f} s expected for this one; retry after {RETRY_AFTER_S} s",
                        "overloaded")
        return answer

    async def _bounded(self, response: Any, method: str, model: str) -> Any:
        """Await a backbone call within request_timeout_s: 504 after it, 503 when the replica is gone or full."""
        import asyncio

        try:
            return await asyncio.wait_for(_awaited(response), self.request_timeout_s)
        except asyncio.TimeoutError:
            log.warning("backbone call %s for %s took longer than %.1fs", method, model, self.request_timeout_s)
            raise _fail(504, f"the model did not answer within {self.request_timeout_s:g} s; retry later",
                        "timeout") from None
        except HTTPException:
            raise
        except Exception as exc:  # replica errors become a visible 5xx, never a silent drop
            import uuid

            name = type(exc).__name__
            status = 503 if any(w in name for w in _REPLICA_GONE) else 500
            error_id = uuid.uuid4().hex[:12]
            log.exception("error %s: backbone call %s for %s failed", error_id, method, model)
            # the details (paths, stack) stay in the replica's log under the error id
            raise _fail(status, f"model replica failed ({name}); error id {error_id} (details in the server log)",
                        "replica_error") from None

    @api.get("/healthz")
    async def healthz(self) -> Any:
        loaded: list[str] = []
        for key, handle in self.backbones.items():
            try:
                loaded += await handle.loaded_models.remote()
            except Exception as exc:  # the ingress stays up and says so while a backbone replica restarts
                return JSONResponse(status_code=503, content={"status": "unavailable", "backbone": key,
                                                              "reason": type(exc).__name__})
        return {"status": "ok", "models": sorted(self.entries), "backbones": len(self.backbones),
                "adapters_loaded_on_a_replica": loaded}

    async def _count_tokens(self, entry: ModelEntry, texts: list[str]) -> list[int]:
        for i, t in enumerate(texts):  # characters first: a huge text never reaches the tokenizer
            if len(t) > self.max_input_chars:
                raise _fail(400, f"input[{i}] has {len(t)} characters; the limit is {self.max_input_chars}",
                            "input_too_long")
        import asyncio

        tokenizer = await asyncio.to_thread(self._tokenizer, entry.backbone)
        if tokenizer is not None:
            return await asyncio.to_thread(
                lambda: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])
        return await self._bounded(self.backbones[entry.backbone].count_tokens.remote(texts), "count_tokens", entry.id)

    def _tokenizer(self, backbone: str) -> Any:
        """The base model's text tokenizer (what the backbone counts with), or None to let the backbone count."""
        if backbone not in self.tokenizers:
            tokenizer = None
            base = self.bases.get(backbone)
            if base is not None:
                try:
                    from skr_ray.models.backbone import load_tokenizer, materialize

                    tokenizer = load_tokenizer(materialize(base))
                    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's text half
                except Exception:  # noqa: BLE001 - counting falls back to the backbone replica
                    log.exception("no tokenizer for %s in the ingress; the backbone counts tokens", backbone)
            self.tokenizers[backbone] = tokenizer
        return self.tokenizers[backbone]

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [e.describe() for e in self.entries.values()]}

    @api.post("/v1/search")
    async def search(self, body: SearchRequest) -> dict[str, Any]:
        """The ``top_k`` corpus passages nearest the query, by the model's own embedding of it."""
        entry = self._entry(body.model, "/v1/search", task_route="/v1/embeddings")
        if not entry.index or self.index is None:
            raise _fail(400, f"model {body.model!r} has no corpus index: run `skr index` for its run and serve that "
                             "run folder", "no_index")
        if not body.query.strip():
            raise _fail(400, "query is empty", "empty_input")
        if len(body.query) > self.max_input_chars:
            raise _fail(400, f"query has {len(body.query)} characters; the limit is {self.max_input_chars}",
                        "input_too_long")
        (tokens,) = await self._count_tokens(entry, [body.query])
        if tokens > self.max_input_tokens:
            raise _fail(400, f"query has {tokens} tokens; the limit is {self.max_input_tokens}", "input_too_long")
        (vector,) = await self._call(body.model, "embed", [body.query])
        hits = await self._bounded(self.index.search.remote(body.model, vector, body.top_k, body.ids), "search",
                                   body.model)
        return {"object": "list", "model": body.model, "data": hits,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @api.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        entry = self._entry(body.model, "/v1/embeddings")
        if body.image is not None:
            if body.input is not None:
                raise _fail(400, "send input (texts) or image (images), not both", "wrong_input")
            return await self._embed_images(entry, body)
        if body.input is None:
            raise _fail(400, "input is missing", "empty_input")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise _fail(400, "input must be a non-empty string or a non-empty list of strings", "empty_input")
        if len(texts) > self.max_inputs:
            raise _fail(400, f"input has {len(texts)} items; the limit is {self.max_inputs} per request", "too_many_inputs")
        for i, t in enumerate(texts):
            if not t.strip():
                raise _fail(400, f"input[{i}] is empty", "empty_input")
        counts = await self._count_tokens(entry, texts)
        for i, n in enumerate(counts):
            if n > self.max_input_tokens:
                raise _fail(400, f"input[{i}] has {n} tokens; the limit is {self.max_input_tokens}", "input_too_long")
        vectors = np.asarray(await self._call(body.model, "embed", texts), dtype=np.float32)
        return self._embedding_response(body, vectors, int(sum(counts)))

    async def _embed_images(self, entry: ModelEntry, body: EmbeddingRequest) -> dict[str, Any]:
        if not entry.vision:
            raise _fail(400, f"model {body.model!r} reads text, not images", "wrong_input")
        images = [body.image] if isinstance(body.image, str) else list(body.image)
        if not images:
            raise _fail(400, "image must be a non-empty string or list of base64 images", "empty_input")
        if len(images) > self.max_inputs:
            raise _fail(400, f"image has {len(images)} items; the limit is {self.max_inputs} per request", "too_many_inputs")
        raws = [(await self._decode_image(data))[0] for data in images]
        vectors = np.asarray(await self._call(body.model, "embed_images", raws), dtype=np.float32)
        return self._embedding_response(body, vectors, 0)

    def _embedding_response(self, body: EmbeddingRequest, vectors: np.ndarray, tokens: int) -> dict[str, Any]:
        if body.dimensions is not None:
            if body.dimensions > vectors.shape[1]:
                raise _fail(400, f"dimensions={body.dimensions} exceeds the model's {vectors.shape[1]}", "bad_dimensions")
            vectors = vectors[:, : body.dimensions]
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        data = []
        for i, v in enumerate(vectors):
            emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @api.post("/v1/classify")
    async def classify(self, body: ClassifyRequest) -> dict[str, Any]:
        entry = self._entry(body.model, "/v1/classify")
        if not body.query.strip():
            raise _fail(400, "query is empty", "empty_input")
        if entry.vision:  # multimodal AD: the query against a chart or page image
            if body.image is None:
                raise _fail(400, f"model {body.model!r} reads images: send image (base64), not passage", "wrong_input")
            raw, _ = await self._decode_image(body.image)
        elif body.image is not None:
            await self._decode_image(body.image)
            raise _fail(400, f"model {body.model!r} reads text passages, not images", "wrong_input")
        elif not body.passage or not body.passage.strip():
            raise _fail(400, "passage is empty", "empty_input")
        (n_query,) = await self._count_tokens(entry, [body.query])
        if n_query > self.max_input_tokens:
            raise _fail(400, f"query has {n_query} tokens; the limit is {self.max_input_tokens}", "input_too_long")
        if entry.vision:
            prob = float(await self._call(body.model, "classify_image", raw, body.query))
        else:
            prob = float(await self._call(body.model, "classify", body.query, body.passage))
        threshold = float(entry.head_info.get("threshold", 0.5))
        return {"model": body.model, "probability": prob, "label": int(prob >= threshold),
                "answerable": prob >= threshold, "threshold": threshold}

    @api.post("/v1/detect")
    async def detect(self, body: DetectRequest) -> dict[str, Any]:
        raw, image = await self._decode_image(body.image)
        entry = self._entry(body.model, "/v1/detect")
        from skr_ray.tasks.od.boxes import to_pixels
        from skr_ray.tasks.od.prompts import DEFAULT_OBJECT

        query = (body.query or "").strip() or DEFAULT_OBJECT
        (n_query,) = await self._count_tokens(entry, [query])
        if n_query > self.max_input_tokens:
            raise _fail(400, f"query has {n_query} tokens; the limit is {self.max_input_tokens}", "input_too_long")
        box = [float(v) for v in await self._call(body.model, "detect", raw, query)]
        width, height = image.size
        return {"object": "detection", "model": body.model, "query": query,
                "box": {"normalized": box, "pixels": to_pixels(box, width, height)},
                "image": {"width": width, "height": height}}

    async def _decode_image(self, data: str) -> tuple[bytes, Any]:
        """base64 -> (bytes, PIL image), off the event loop (decoding a page takes a while)."""
        import asyncio

        return await asyncio.to_thread(self._decode_image_sync, data)

    def _decode_image_sync(self, data: str) -> tuple[bytes, Any]:
        from skr_ray.models.vision import decode_image

        try:
            raw = base64.b64decode(data.split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError):
            raise _fail(400, "image is not valid base64", "undecodable_image") from None
        if len(raw) > self.max_image_bytes:
            raise _fail(400, f"image has {len(raw)} bytes; the limit is {self.max_image_bytes}", "image_too_large")
        try:
            return raw, decode_image(raw, self.max_image_pixels)
        except ValueError as exc:
            raise _fail(400, str(exc), "undecodable_image") from None


def build_app(args: dict[str, Any]) -> Any:
    """Serve application from config args: ``models`` ({id: checkpoint or run dir}) plus options.

    Options: auth (api_keys_env | api_keys_file | disabled: see load_api_keys; requests_per_minute: 429 above), max_request_bytes (413 above, from
    the Content-Length header), request_timeout_s (504 after), max_batch_size, max_image_batch_size,
    batch_wait_timeout_s (a batch's wait to fill on an idle replica), max_batch_wait_s (its longest wait on a
    saturated one, 0.2 s; equal to batch_wait_timeout_s: a fixed wait), max_adapters (LRU bound per replica),
    merge_single_adapter (true: a replica holding one adapter runs it merged into the base weights),
    max_input_chars, max_input_tokens,
    max_inputs_per_request, max_image_bytes, max_image_pixels, max_in_flight (model requests admitted at once by
    the app, shared by the ingress replicas; 503 with Retry-After beyond it; default: default_max_in_flight; 0:
    no bound), latency_tolerance (each backbone replica, below its share of max_in_flight, admits a request only
    when its predicted latency is within this many times its kind's usual latency alone; 1.5; 0: the fixed
    bound only),
    backbone / ingress: Serve deployment options
    (num_replicas, autoscaling_config, ray_actor_options, max_ongoing_requests, max_queued_requests);
    ``backbone`` applies to every base model's backbone deployment.
    """
    args = dict(args or {})
    auth = args.pop("auth", {})
    backbone_opts = dict(args.pop("backbone", {}))
    ingress_opts = dict(args.pop("ingress", {}))
    # Two ingress replicas unless told otherwise: when one dies (SIGKILL, OOM, a lost node) the proxy sends new
    # requests to the other at once instead of holding them until Serve has started a replacement (~15 s).
    if "autoscaling_config" not in ingress_opts:
        ingress_opts.setdefault("num_replicas", 2)
    ingress_replicas = _max_replicas(ingress_opts)
    # The per-key limit and the admission bound are kept per ingress replica; the proxy spreads requests evenly
    # over the replicas, so each gets its share of the app-wide figure.
    per_minute = requests_per_minute(auth)
    args["_requests_per_minute"] = _share(per_minute, ingress_replicas)
    args["_requests_per_minute_app"] = per_minute
    args["_key_digests"] = load_api_keys(auth)  # refuses to build without keys or auth.disabled
    entries, bases = build_registry(dict(args.pop("models", {})))
    ingress_opts.setdefault("ray_actor_options", {"num_cpus": 0.1})
    indexes = {e.id: e.index for e in entries.values() if e.index}
    index_cpus = INDEX_CPUS if indexes else 0.0
    backbone_opts.setdefault("ray_actor_options", {
        "num_cpus": _default_backbone_cpus(len(bases) * _max_replicas(backbone_opts), index_cpus +
                                           ingress_replicas * float(ingress_opts["ray_actor_options"].get("num_cpus", 0))),
        "num_gpus": _default_gpus()})
    _check_cpus(backbone_opts, ingress_opts, len(bases), index_cpus)
    backbone_opts.setdefault("max_ongoing_requests", 64)
    backbone_opts.setdefault("max_queued_requests", 1024)  # beyond this: 503, never a silent drop
    # The ingress logs every request; the backbone's own line per internal call would only repeat it, at a cost in
    # CPU (written, then streamed to the driver) that a replica sharing a few cores with the proxy pays per request.
    backbone_opts.setdefault("logging_config", {"enable_access_log": False})
    ingress_opts.setdefault("max_ongoing_requests", 256)
    ingress_opts.setdefault("max_queued_requests", 1024)  # beyond this the proxy answers 503 at once
    from skr_ray.serve import guard

    in_flight = int(args.get("max_in_flight", default_max_in_flight(args, backbone_opts, len(bases))))
    guard.check_admission(in_flight, float(args.get("latency_tolerance", guard.DEFAULT_LATENCY_TOLERANCE)))
    # The hard bound is split over the ingress replicas; the adaptive one lives in each backbone replica (the
    # only place that sees all the requests its model runs), with the ceiling of its share.
    args["_backbone_in_flight"] = _share(in_flight, _max_replicas(backbone_opts) * max(len(bases), 1))
    args["max_in_flight"] = _share(in_flight, ingress_replicas)
    backbones = {}
    for n, (key, base) in enumerate(bases.items()):
        own = {k: e for k, e in entries.items() if e.backbone == key}
        name = "SKRBackbone" if n == 0 else f"SKRBackbone{n}"
        backbones[key] = SKRBackbone.options(name=name, **backbone_opts).bind(own, base, args)
    index = SKRIndex.options(ray_actor_options={"num_cpus": index_cpus}).bind(indexes) if indexes else None
    return Api.options(**ingress_opts).bind(backbones, entries, args, dict(bases), index)


def _share(total: int, replicas: int) -> int:
    """One replica's even share of an app-wide limit, rounded up (0 stays 0: no limit)."""
    return -(-total // replicas)


def _max_replicas(deployment_opts: dict[str, Any]) -> int:
    replicas = deployment_opts.get("num_replicas", 1)
    scaling = deployment_opts.get("autoscaling_config") or {}
    if scaling or replicas == "auto":
        replicas = int(scaling.get("max_replicas", 1)) if isinstance(scaling, dict) else 1
    return max(int(replicas), 1)


def default_max_in_flight(args: dict[str, Any], backbone_opts: dict[str, Any], n_backbones: int) -> int:
    """Model requests the app lets in at once (``max_in_flight``, shared evenly by the ingress replicas): two full
    text batches per backbone replica (the one running and the next filling), at the most replicas the backbone
    may scale to. More would only queue: under sustained overload every extra request waits longer, and the
    latency of every accepted request grows with it."""
    return 2 * int(args.get("max_batch_size", 16)) * _max_replicas(backbone_opts) * max(n_backbones, 1)


def _cluster_cpus() -> float | None:
    """CPUs of the running Ray cluster (None: Ray not started yet, or a cluster that reports none)."""
    import ray

    if not ray.is_initialized():
        return None
    return float(ray.cluster_resources().get("CPU", 0)) or None


def _default_backbone_cpus(backbone_replicas: int, ingress_cpus: float) -> float:
    """One CPU per backbone replica, or an even share of what the cluster has beside the ingress replicas when
    that is less: two base models at one CPU each on a 2-CPU machine would leave the ingress none, and Serve
    would wait for it forever."""
    total = _cluster_cpus()
    if total is None:
        return 1.0
    share = (total - ingress_cpus) / max(backbone_replicas, 1)
    return max(min(1.0, math.floor(share * 100) / 100), 0.01)


INDEX_CPUS = 0.1
"""The SKRIndex deployment's CPU reservation (a search is a short call; faiss threads use what is free)."""


def _check_cpus(backbone_opts: dict[str, Any], ingress_opts: dict[str, Any], n_backbones: int,
                other: float = 0.0) -> None:
    """A clear error now instead of a Serve app that waits forever for CPUs the cluster does not have (an
    autoscaling cluster may add them: only a cluster without autoscaling options is checked)."""
    total = _cluster_cpus()
    if total is None or "autoscaling_config" in backbone_opts or "autoscaling_config" in ingress_opts:
        return
    backbone = float(backbone_opts["ray_actor_options"].get("num_cpus", 1)) * _max_replicas(backbone_opts)
    ingress = float(ingress_opts["ray_actor_options"].get("num_cpus", 0)) * _max_replicas(ingress_opts)
    need = backbone * max(n_backbones, 1) + ingress + other
    if need > total + 1e-9:
        raise ValueError(f"the Serve app needs {need:g} CPUs ({n_backbones} backbone deployment(s) x {backbone:g} + "
                         f"ingress {ingress:g}" + (f" + index {other:g}" if other else "") + f") and the cluster has "
                         f"{total:g}: lower backbone.ray_actor_options.num_cpus or the replicas, or add nodes")


def _default_gpus() -> float:
    """One GPU per backbone replica when the cluster (or, before Ray starts, this machine) has one."""
    import ray

    try:
        if ray.is_initialized():
            return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    except Exception:  # noqa: BLE001
        return 0.0
