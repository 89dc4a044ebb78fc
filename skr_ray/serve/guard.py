"""What the HTTP guard of the Serve ingress checks, set by the replica's Api.

A module of its own: the ingress class reaches the replica as a copy (Serve pickles it by value), while the
FastAPI middleware is imported by reference, so both must look the settings up here through the import system.
"""

from __future__ import annotations

from typing import Any

CONFIG: dict[str, Any] = {"digests": [], "max_request_bytes": 32 * 2**20}
"""digests: SHA-256 of the accepted API keys ([] = none accepted yet; None = authentication disabled)."""
