"""One request to the fake upstream: its body, its ``fake`` controls and every size drawn for it.

Every choice (a trace row, a cache hit, a relevance score) comes from a hash of the request
body, so the same request always gets the same answer and the same usage.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tallygate.demo.trace import load_trace


@dataclass(frozen=True, slots=True)
class FakeSettings:
    latency_ms: float = 0.0  # before the answer (non-streamed) or the first chunk
    chunks: int = 8  # content chunks of a stream
    chunk_delay_ms: float = 0.0
    error_rate: float = 0.0  # share of requests answered 500
    report_usage: bool = True  # False: like providers that never report usage
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Upload:
    """The file part of a multipart request, as counted while it streamed in."""

    filename: str
    content_type: str
    size: int
    head: bytes  # its first bytes (format headers: RIFF/WAVE, %PDF, ...)
    sha256: str
    pdf_pages: int  # "/Type /Page" objects seen, for PDFs


@dataclass(slots=True)  # not frozen: made for every request, and frozen costs at creation
class Call:
    request: dict[str, Any]  # the JSON body, or a multipart request's text fields
    control: dict[str, Any]  # the ``fake`` field
    digest: int  # hash of the body: picks the trace row and every other choice
    settings: FakeSettings
    upload: Upload | None = None
    cohere: bool = False  # a rerank asked at Cohere's path (/v2/rerank)

    def draw(self, salt: str) -> float:
        """A number in [0, 1) fixed by the body and ``salt``."""
        digest = hashlib.blake2b(salt.encode(), digest_size=8,
                                 key=self.digest.to_bytes(8, "big")).digest()
        return int.from_bytes(digest, "big") / 2**64

    def trace_tokens(self, service: str = "conv",
                     caps: Sequence[str] = ("max_tokens", "max_completion_tokens")
                     ) -> tuple[int, int]:
        """(input, output) tokens of the trace row this body maps to, the output capped by
        the first of ``caps`` the request sets; ``input_tokens`` / ``output_tokens`` in the
        controls override them."""
        pairs = load_trace()[service].token_pairs
        input_tokens, output_tokens = pairs[self.digest % len(pairs)]
        for name in caps:
            cap = self.request.get(name)
            if isinstance(cap, int) and cap > 0:
                output_tokens = min(output_tokens, cap)
                break
        return (int(self.control.get("input_tokens", input_tokens)),
                max(1, int(self.control.get("output_tokens", output_tokens))))

    def count(self, name: str, default: int) -> int:
        """A size the controls may set (``cached_tokens``, ``pages``, ``seconds``, ...)."""
        value = self.control.get(name, default)
        try:
            return max(0, int(value))
        except (TypeError, ValueError):  # a control that is no number is ignored
            return default

    @property
    def model(self) -> str:
        return str(self.request.get("model") or "fake-model")

    @property
    def stream(self) -> bool:
        return self.request.get("stream") in (True, "true", "True")

    @property
    def report_usage(self) -> bool:
        return self.settings.report_usage and not self.control.get("no_usage", False)

    @property
    def chunks(self) -> int:
        return max(1, int(self.control.get("chunks", self.settings.chunks)))

    @property
    def chunk_delay_s(self) -> float:
        return float(self.control.get("chunk_delay_ms", self.settings.chunk_delay_ms)) / 1000

    @property
    def cut_after(self) -> int | None:
        value = self.control.get("cut_after")
        return value if isinstance(value, int) else None

    @property
    def endless_event_bytes(self) -> int:
        """``endless_event_bytes``: after the first content chunk, one event's data this long
        that never ends (no blank line), as a broken upstream sends it; 0 for none."""
        return self.count("endless_event_bytes", 0)

    @property
    def stamp(self) -> bool:
        return self.control.get("stamp") is True

    async def pause(self) -> None:
        """The wait between two streamed chunks."""
        if self.chunk_delay_s:
            await asyncio.sleep(self.chunk_delay_s)

    def new_id(self, prefix: str, hex_digits: int = 24) -> str:
        return f"{prefix}{random.getrandbits(hex_digits * 4):0{hex_digits}x}"


def text(tokens: int) -> str:
    """``tokens`` four-character words: the gateway's estimate of it is exact."""
    return "tok " * tokens


def split(content: str, parts: int) -> list[str]:
    size = max(1, -(-len(content) // parts))
    return [content[i:i + size] for i in range(0, len(content), size)] or [""]


def estimate_tokens(content: str) -> int:
    """About four characters a token, as tokenizers average on English."""
    return max(1, -(-len(content) // 4)) if content else 0


# Models whose answers report reasoning tokens.
_REASONING = re.compile(r"(^|[/_-])(o\d|gpt-5|r1|reasoner|thinking)([._-]|$)", re.IGNORECASE)
# The dated snapshot an upstream reports for an alias (its answer's ``model``).
SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "o4-mini": "o4-mini-2025-04-16",
    "omni-moderation-latest": "omni-moderation-2024-09-26",
    "text-moderation-latest": "text-moderation-007",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
}


def served_model(name: str) -> str:
    return SNAPSHOTS.get(name, name)


def is_reasoning_model(name: str) -> bool:
    return bool(_REASONING.search(name))
