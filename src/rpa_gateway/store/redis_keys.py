"""The Redis store's key and channel names.

Key layout (``rpa`` is the prefix).  ``{<id>}`` is a hash tag: one execution's keys
share a cluster slot, so a Lua script updates them atomically, in cluster mode too.

    rpa:{<id>}:x         hash: the execution, every field a JSON value
    rpa:{<id>}:ev        list: its events, event ``seq`` at index ``seq - 1``
    rpa:{<id>}:token     string: the sealed token (bytes), deleted at finish
    rpa:{<id>}:lease     string: the holder supervising it, expiring with the lease
    rpa:unfinished       sorted set: ids of unfinished executions, by created_at
    rpa:owner:<owner>    sorted set: the owner's execution ids, by created_at
    rpa:executions       sorted set: every execution id, by created_at (operators' lists)
    rpa:finished         sorted set: ``[id, owner]`` by finished_at, for purge_finished
    rpa:replicas         hash: announced process -> alive until (ms), see announce()
    rpa:idem:<n>:<owner>:<key>   string: ``"<id> <reserved at>"`` (n: length of owner)
    rpa:mcp:<session id> string: an MCP session (JSON), expiring with it

    rpa:live:<id>        channel: the execution's events as they are written, as JSON,
                         for the processes that follow it without writing it
    rpa:notices          channel: notify()
    rpa:changes          channel: every execution change (executions.change_of) with its
                         owner, for feeds; listened to only while a feed is open here
    rpa:msg:<channel>    channel: send_message(), listened to while subscribed here

The webhooks' keys are redis_webhooks' (``rpa:{wh}:...``).
"""

from __future__ import annotations

from collections.abc import Sequence


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.unfinished = f"{prefix}:unfinished"
        self.finished = f"{prefix}:finished"
        self.every = f"{prefix}:executions"
        self.holders = f"{prefix}:replicas"
        self.notices_channel = f"{prefix}:notices"
        self.changes_channel = f"{prefix}:changes"
        self.write_probe = f"{prefix}:write-probe"
        self.token_key = f"{prefix}:token-key"  # RPA_TOKEN_KEY's fingerprint, never the key
        self.epoch = f"{prefix}:epoch"  # names the contents; gone when Redis loses them

    def live(self, execution_id: str) -> str:
        return f"{self.prefix}:live:{execution_id}"

    def followed(self, channels: Sequence[str]) -> list[str]:
        """The executions whose live channels these are."""
        head = f"{self.prefix}:live:"
        return [c.removeprefix(head) for c in channels if c.startswith(head)]

    def record(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:x"

    def events(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:ev"

    def token(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:token"

    def lease(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:lease"

    def owner(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}"

    def stored_bytes(self, owner: str) -> str:
        return f"{self.prefix}:bytes:{owner}"

    def durations(self, model: str) -> str:
        return f"{self.prefix}:durations:{model}"

    def mcp_session(self, session_id: str) -> str:
        return f"{self.prefix}:mcp:{session_id}"

    def messages(self, channel: str) -> str:
        return f"{self.prefix}:msg:{channel}"

    def idempotency(self, owner: str, key: str) -> str:
        # The owner's length keeps ("a:b", "c") and ("a", "b:c") apart.
        return f"{self.prefix}:idem:{len(owner)}:{owner}:{key}"
