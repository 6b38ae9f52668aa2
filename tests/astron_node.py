"""A client that calls ``/rpa/v1/exec`` exactly as astron-agent's workflow RPA node does.

What the node does (core/workflow/engine/nodes/rpa/rpa_node.py), written anew:
- URL ``f"{RPA_BASE_URL}/rpa/v1/exec"`` (a base ending in ``/`` gives ``//rpa/...``);
- headers ``Content-Type: application/json`` and ``Authorization: <apiKey or "">``;
- aiohttp 3.10 (astron-agent pins 3.10.10), reading the body line by line with its
  default buffer of 64 KiB: a line over 2 x 64 KiB raises (``ValueError("Chunk too
  big")`` there; aiohttp 3.14, installed here, reads bigger buffers by default, so the
  session is given 3.10's ``read_bufsize`` and raises ``LineTooLong`` at the same size);
- every line starting with ``data:`` is validated as ``{code:int, message:str,
  sid:str="", data:dict|None}``; ``code != 0`` fails the node with the message;
  otherwise the frame's data is kept;
- the HTTP status is never looked at; the last kept data is the node's outputs,
  ``{}`` when no data line came at all - a silent success.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from pydantic import BaseModel, Field

NODE_READ_BUFSIZE = 2**16  # aiohttp 3.10's default; a line may be twice that
NODE_MAX_LINE = 2 * NODE_READ_BUFSIZE


class NodeFailed(Exception):
    """The node would end FAILED with this message (a frame with a non-zero code)."""


class _Frame(BaseModel):
    code: int
    message: str
    sid: str = ""
    data: dict[str, Any] | None = Field(default_factory=dict)


async def run_node(
    base_url: str,
    api_key: str | None,
    body: dict[str, Any] | None,
    *,
    content: bytes | None = None,
) -> dict[str, Any]:
    """The node's outputs, or :class:`NodeFailed`; any other exception fails the node too.

    ``api_key=None`` leaves the header out and ``content`` sends raw bytes instead of
    ``body``: the node itself never does either, other callers of the same endpoint do.
    """
    url = f"{base_url}/rpa/v1/exec"
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = api_key
    data: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=24 * 60 * 60, sock_connect=30)
    async with (
        aiohttp.ClientSession(timeout=timeout, read_bufsize=NODE_READ_BUFSIZE) as session,
        session.post(
            url=url, headers=headers, json=body if content is None else None, data=content
        ) as response,
    ):
        async for line in response.content:
            message = line.decode("utf-8")
            if not message.startswith("data:"):
                continue
            frame = _Frame.model_validate_json(message.removeprefix("data:"))
            if frame.code != 0:
                raise NodeFailed(frame.message)
            data = frame.data if frame.data is not None else {}
    return data


def node_call(
    base_url: str, api_key: str | None, body: dict[str, Any] | None, **options: Any
) -> dict[str, Any]:
    return asyncio.run(run_node(base_url, api_key, body, **options))
