"""Admitting uploads: the body's size and time limits, the file type read from its bytes, and
read errors as a client may see them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException


def sniff_suffix(head: bytes) -> str | None:
    """File type from magic bytes (never from the client's file name)."""
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ".dcm"
    if head.startswith(b"MATLAB 7.3") or head[512:520] == b"\x89HDF\r\n\x1a\n" or head.startswith(b"\x89HDF"):
        return ".mat"
    return None


def client_message(message: str, path: Path) -> str:
    """A read error as a client may see it: no server paths, no decoder internals."""
    message = message.replace(str(path), "upload")
    head, internal, _ = message.partition(": cannot read (")
    return f"{head}: cannot read the image (damaged, truncated or not what its first bytes say)" if internal \
        else message


class BodyLimit:
    """ASGI middleware: count the request body as it arrives and answer 413 as soon as it passes
    the limit (chunked uploads without Content-Length too, before they are spooled to disk), and
    408 when no bytes arrive for ``timeout_s`` or the whole body takes over ``deadline_s`` (so a
    client trickling a byte now and then cannot hold a connection for ever)."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float, deadline_s: float = 300.0) -> None:
        self.app, self.max_bytes, self.timeout_s, self.deadline_s = app, max_bytes, timeout_s, deadline_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received, complete, start = 0, False, time.monotonic()
        limit_mb = self.max_bytes // (1024 * 1024)

        async def limited() -> dict[str, Any]:
            nonlocal received, complete
            if complete:  # after the body: e.g. waiting for a disconnect; no upload limits apply
                return dict(await receive())
            left = self.deadline_s - (time.monotonic() - start)
            try:
                message: dict[str, Any] = await asyncio.wait_for(receive(), max(min(self.timeout_s, left), 0.0))
            except TimeoutError:
                if left <= self.timeout_s:
                    raise HTTPException(408, f"upload took longer than {self.deadline_s:g} s") from None
                raise HTTPException(408, f"upload stalled: no data for {self.timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"file larger than {limit_mb} MB")
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


