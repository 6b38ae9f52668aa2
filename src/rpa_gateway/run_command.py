"""``rpa-gateway run``: start a project on a running service and watch it to its end.

Progress goes to stderr as it happens, the result to stdout as JSON; the exit
status is 0 on success, 1 when the execution failed (its message on stderr),
2 when the service could not be reached or refused the request.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

from rpa_gateway.console.untrusted import json_text, visible

EXIT_FAILED = 1
EXIT_UNREACHABLE = 2


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; a value that parses as JSON is taken as JSON (``n=3`` is a number)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"parameter {text!r} is not key=value")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def run_project(
    url: str,
    token: str,
    project_id: str,
    params: dict[str, Any],
    sid: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    *,
    as_json: bool = False,
) -> int:
    """``as_json``: the terminal frame (code, message, sid, data) as one JSON line on
    stdout, whatever the outcome, instead of the result alone."""
    body: dict[str, Any] = {"project_id": project_id, "params": params}
    if sid:
        body["sid"] = sid
    request = urllib.request.Request(  # noqa: S310 - the URL scheme is checked by the caller
        url.rstrip("/") + "/rpa/v1/exec?progress=true",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        },
        method="POST",
    )
    last_id = ""
    try:
        with urllib.request.urlopen(request, timeout=None) as response:  # noqa: S310
            for raw in response:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("id:"):
                    last_id = line[3:].strip()
                if not line.startswith("data:"):
                    continue
                frame = json.loads(line[5:])
                if frame.get("message") == "Progress" and frame.get("code") == 0:
                    _show_progress(frame.get("data") or {}, err)
                    continue
                if as_json:
                    print(json_text(frame), file=out)
                if frame.get("code") == 0:
                    if not as_json:
                        print(json_text(frame.get("data"), indent=2), file=out)
                    return 0
                print(
                    f"failed ({frame.get('code')}): {visible(str(frame.get('message')))}", file=err
                )
                return EXIT_FAILED
    except urllib.error.HTTPError as exc:
        print(f"refused (HTTP {exc.code}): {visible(_error_message(exc.read()))}", file=err)
        return EXIT_UNREACHABLE
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach {url}: {getattr(exc, 'reason', exc)}", file=err)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        if last_id:
            resume = visible(last_id)
            print(f"\nstopped watching; the execution goes on (Last-Event-ID: {resume})", file=err)
        return 130
    print("the stream ended without a result", file=err)
    return EXIT_FAILED


def _show_progress(data: dict[str, Any], err: TextIO) -> None:
    progress = data.get("progress") or {}
    percent = progress.get("percent")
    prefix = f"[{percent:5.1f}%] " if isinstance(percent, int | float) else "[ ... ] "
    print(prefix + visible(str(progress.get("message", ""))), file=err, flush=True)


def _error_message(raw: bytes) -> str:
    """A refusal's message: from its JSON body, or from the one ``data:`` frame /exec
    answers refusals with."""
    text = raw.decode("utf-8", "replace")
    framed = [line[5:] for line in text.splitlines() if line.startswith("data:")]
    try:
        return str(json.loads(framed[0] if framed else text).get("message"))
    except (ValueError, AttributeError):
        return text[:200]
