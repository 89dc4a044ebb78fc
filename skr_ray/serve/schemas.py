"""Request and response bodies (OpenAI-compatible for /v1/embeddings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EmbeddingRequest(BaseModel):
    model: str
    input: str | list[str] | None = None
    image: str | list[str] | None = None
    """Instead of ``input``: base64 images (image IR models embed documents that are images, in the same
    space as their text questions)."""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class ClassifyRequest(BaseModel):
    model: str
    query: str
    passage: str | None = None
    image: str | None = None
    """base64 image (multimodal AD models); text models take a passage."""


class DetectRequest(BaseModel):
    model: str
    image: str
    """base64-encoded page image (PNG/JPEG; a ``data:image/...;base64,`` prefix is accepted)."""
    query: str | None = None
    """What to find; default: the figure or table with its caption and source line."""


class SearchRequest(BaseModel):
    model: str
    """An IR model served with its index (a run folder where ``skr index`` has run)."""
    query: str
    top_k: int = Field(default=10, ge=1, le=1000)
    ids: list[str] | None = None
    """Search only among these corpus ids."""
