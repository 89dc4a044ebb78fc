"""`annotate.engine=vllm`: self-annotation through vLLM on Ray Data (``ray.data.llm``), for GPU clusters.

Same label schema, provenance and resume as the HF ``generate`` path (``skr_ray.tasks.ir.annotate``); only the
engine differs. One request per (document, label index): the prompt is rendered here with the model's own chat
template, so it is byte-for-byte the HF path's prompt. Users of ``ray.data.llm`` report that one prompt longer
than the model's context kills the whole job: here such a row is counted with status ``too_long`` and its prompt
never reaches the engine, and an engine error on a row is that row's status ``error`` (``should_continue_on_error``).

The corpus streams through in blocks (requests, prompts, engine, label files): nothing is gathered in the driver,
so the driver's memory does not grow with the corpus.

Resume is per (document, label index): a killed run redoes only the requests whose label rows are missing.
Needs the ``vllm`` extra (``pip install skr_ray[vllm]``), which installs only where CUDA is.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.config import SKRConfig, from_dict
from skr_ray.ray_utils import actor_pool, cluster_gpus
from skr_ray.schema import DOC_ID, LABEL_SCHEMA, TEXT

log = logging.getLogger(__name__)

ERROR_COLUMN = "__inference_error__"
REQUEST_COLUMNS = (DOC_ID, TEXT, "label_index", "kind", "sampled", "prompt", "prompt_tokens", "too_long", "empty")
SKIPPED_PROMPT = "."
"""What the engine gets for a row counted ``too_long`` or ``empty_input`` (one token asked, its answer never read):
the rows stream through one processor instead of being split off, which would need the requests twice."""


def context_length(model_dir: Path) -> int:
    """The model's context from its config.json (text config of a vision-language model)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    text = config.get("text_config") or config
    return int(text.get("max_position_embeddings") or config.get("max_position_embeddings") or 4096)


def requests(ids: list[str], texts: list[str], kinds: list[str], per_kind: int,
             done: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """One request per (document, label index) not yet labelled; index k is kind kinds[k // per_kind],
    greedy for the first of each kind and sampled for the rest (as the HF path)."""
    out = []
    for doc_id, text in zip(ids, texts):
        for k in range(per_kind * len(kinds)):
            if (doc_id, k) not in done:
                out.append({DOC_ID: doc_id, TEXT: text, "label_index": k, "kind": kinds[k // per_kind],
                            "sampled": k % per_kind > 0})
    return out


class PromptBuilder:
    """Ray Data UDF: the chat prompt of each request, cut as the HF path cuts it, and its token count;
    rows whose prompt plus the generation budget exceed the context get status ``too_long``."""

    def __init__(self, cfg_dict: dict[str, Any], model_dir: str, done: Any = ()) -> None:
        from skr_ray.annotate.generation import GenerationEngine
        from skr_ray.models.backbone import load_tokenizer

        self.cfg = from_dict(cfg_dict)
        a = self.cfg.annotate
        tokenizer = load_tokenizer(model_dir)
        self.engine = GenerationEngine(None, tokenizer, a.max_input_tokens, a.max_new_tokens)
        self.limit = (a.max_model_len or context_length(Path(model_dir))) - a.max_new_tokens
        if done and not isinstance(done, (list, tuple, set)):  # an ObjectRef: a resume's list, put once
            import ray

            done = ray.get(done)
        self.done = {(str(d), int(k)) for d, k in done}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Corpus rows (doc_id, text) or request rows: the prompt of each request not yet labelled."""
        from skr_ray.tasks.ir.prompts import build_kind_messages, fewshot_prompt

        if "label_index" not in batch:  # a block of corpus rows: its requests, streamed
            a = self.cfg.annotate
            todo = requests([str(x) for x in batch[DOC_ID]], ["" if t is None else str(t) for t in batch[TEXT]],
                            list(a.label_kinds), a.questions_per_doc, self.done)
            if not todo:
                return {name: np.asarray([], dtype=object) for name in REQUEST_COLUMNS}
            batch = {name: np.asarray([r[name] for r in todo], dtype=object) for name in todo[0]}
        texts = [self.engine.truncate("" if t is None else str(t)) for t in batch[TEXT]]
        if self.cfg.annotate.prompt_style == "fewshot":
            prompts = [fewshot_prompt(t, str(k)) for t, k in zip(texts, batch["kind"])]
        else:
            prompts = [self.engine.render(build_kind_messages(t, str(k))) for t, k in zip(texts, batch["kind"])]
        lengths = [len(ids) for ids in self.engine.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        return {**batch, TEXT: np.asarray(texts, dtype=object), "prompt": np.asarray(prompts, dtype=object),
                "prompt_tokens": np.asarray(lengths), "too_long": np.asarray([n > self.limit for n in lengths]),
                "empty": np.asarray([not t.strip() for t in texts])}


def sampling_params(cfg: SKRConfig, sampled: bool, seed: int) -> dict[str, Any]:
    from skr_ray.tasks.ir.prompts import FEWSHOT_STOP

    a = cfg.annotate
    stop = {"stop": [FEWSHOT_STOP]} if a.prompt_style == "fewshot" else {}  # resolved by annotate_with_vllm
    if sampled:
        return {"temperature": a.sample_temperature, "top_p": 0.95, "max_tokens": a.max_new_tokens, "seed": seed,
                **stop}
    return {"temperature": 0.0, "max_tokens": a.max_new_tokens, **stop}


class LabelWriter:
    """Ray Data UDF: generated (or skipped) requests -> label rows, one parquet file per batch."""

    def __init__(self, cfg_dict: dict[str, Any], model_id: str) -> None:
        from skr_ray.annotate.labelstore import node_id
        from skr_ray.artifacts import Artifacts
        from skr_ray.tasks.ir.labels import QuestionFilter, kind_filter
        from skr_ray.tasks.ir.prompts import EXAMPLE_QUESTION, kind_prompt_version

        self.cfg = from_dict(cfg_dict)
        a = self.cfg.annotate
        base = QuestionFilter(a.min_words, a.max_words, a.max_copy_ratio, a.require_question_mark,
                              echo_of=(EXAMPLE_QUESTION,))
        style = "fewshot" if a.prompt_style == "fewshot" else "chat"  # resolved by annotate_with_vllm
        self.filters = {k: kind_filter(k, base, style) for k in a.label_kinds}
        self.versions = {k: kind_prompt_version(k, style) for k in a.label_kinds}
        from skr_ray.models.backbone import model_id as id_of

        self.model_id, self.node_id = model_id, node_id()
        self.learner_id = id_of(self.cfg.model)
        self.labels_dir = Artifacts(self.cfg.output_dir).labels_dir
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        self.generation = json.dumps({"engine": "vllm", "max_new_tokens": a.max_new_tokens,
                                      "max_input_tokens": a.max_input_tokens, "greedy_first": True,
                                      "sample_temperature": a.sample_temperature if a.questions_per_doc > 1 else None,
                                      "seed": self.cfg.seed})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from skr_ray.annotate.labelstore import write_label_file
        from skr_ray.tasks.ir.labels import parse_label

        rows: dict[str, list] = {name: [] for name in LABEL_SCHEMA.names}
        now = datetime.now(timezone.utc).isoformat()
        n = len(batch[DOC_ID])
        column = lambda name, default: batch[name] if name in batch else [default] * n  # noqa: E731
        generated, errors = column("generated_text", ""), column(ERROR_COLUMN, "")
        too_long, empty = column("too_long", False), column("empty", False)
        for i in range(n):
            kind, text = str(batch["kind"][i]), str(batch[TEXT][i])
            raw = "" if generated[i] is None else str(generated[i])
            if bool(empty[i]):
                raw, label, status = "", "", "empty_input"
            elif bool(too_long[i]):
                raw, label, status = "", "", "too_long"
            elif errors[i]:
                raw, label, status = str(errors[i]), "", "error"
            else:
                label, status = parse_label(raw, text, self.filters[kind], kind)
            for name, value in ((DOC_ID, str(batch[DOC_ID][i])), ("label_index", int(batch["label_index"][i])),
                                (TEXT, text), ("raw_output", raw), ("label", label), ("status", status),
                                ("task", self.cfg.task), ("prompt_version", self.versions[kind]),
                                ("model_id", self.model_id), ("generation", self.generation), ("annotated_at", now),
                                ("node_id", self.node_id), ("label_kind", kind), ("learner_model_id", self.learner_id)):
                rows[name].append(value)
        if n:
            write_label_file(self.labels_dir, rows)
        return {DOC_ID: rows[DOC_ID], "status": rows["status"]}


def annotate_with_vllm(cfg: SKRConfig, ds: Any, done: set[tuple[str, int]]) -> Any:
    """The labelled-requests dataset (doc_id, status per written label row) for the corpus rows in ``ds``."""
    import ray.data

    try:
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    except ImportError as exc:  # pragma: no cover - Ray without its LLM module
        raise RuntimeError("annotate.engine=vllm needs ray.data.llm (Ray >= 2.44)") from exc
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise RuntimeError("annotate.engine=vllm needs vLLM on the GPU nodes: pip install 'skr_ray[vllm]'")
    from skr_ray.config import annotator_model
    from skr_ray.models.backbone import load_tokenizer, materialize, model_id
    from skr_ray.tasks.ir.prompts import resolve_style

    a = cfg.annotate
    annotator = annotator_model(cfg)
    model_dir = materialize(annotator)

    style = resolve_style(a.prompt_style, load_tokenizer(str(model_dir)))  # auto decided once, for every actor
    cfg = from_dict({**cfg.to_dict(), "annotate": {**cfg.to_dict()["annotate"], "prompt_style": style}})
    cfg_dict = {**cfg.to_dict(), "output_dir": str(Path(cfg.output_dir).resolve())}
    # corpus blocks -> requests -> prompts -> engine -> label files, one stream: nothing is gathered in the driver
    # and no stage waits for the whole corpus; the resume's (document, label index) pairs are put once
    prepared = ds.map_batches(
        PromptBuilder, fn_constructor_kwargs={"cfg_dict": cfg_dict, "model_dir": str(model_dir),
                                              "done": ray.put(sorted(done)) if done else ()},
        # light CPU work (a tokenizer; a parquet writer below): fractions of a CPU, so the reads that feed the
        # stream are never starved of one while these actors live
        batch_size=256, compute=actor_pool(1), num_cpus=0.5)
    seed = cfg.seed
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=str(model_dir),
            engine_kwargs={"max_model_len": a.max_model_len or context_length(model_dir),
                           "tensor_parallel_size": a.tensor_parallel_size, "dtype": annotator.dtype},
            batch_size=a.batch_size,
            # a vLLMEngineProcessorConfig field (it builds the actor pool itself); 0 = every GPU's share
            concurrency=a.num_actors or max(1, int(cluster_gpus() // a.tensor_parallel_size)),
            should_continue_on_error=True,
            chat_template_stage=False,  # the prompt is rendered above, as the HF path renders it
        ),
        preprocess=lambda r: _engine_request(r, cfg, seed),
        postprocess=lambda r: {k: r[k] for k in (DOC_ID, TEXT, "label_index", "kind", "too_long", "empty",
                                                 "generated_text") if k in r},
    )
    return processor(prepared).map_batches(
        LabelWriter, fn_constructor_kwargs={"cfg_dict": cfg_dict, "model_id": model_id(annotator)},
        batch_size=a.batch_size * a.rows_per_file_batches, concurrency=1, num_cpus=0.25)


def _engine_request(row: dict[str, Any], cfg: SKRConfig, seed: int) -> dict[str, Any]:
    """A request row as the engine takes it; a skipped row asks for one token of a one-character prompt."""
    if bool(row["too_long"]) or bool(row["empty"]):
        return {**row, "prompt": SKIPPED_PROMPT, "sampling_params": {"temperature": 0.0, "max_tokens": 1}}
    return {**row, "sampling_params": sampling_params(cfg, bool(row["sampled"]), seed + int(row["label_index"]))}
