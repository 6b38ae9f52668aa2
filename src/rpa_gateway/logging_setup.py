"""Process logging: one line per event, text or JSON, to stderr and optionally a rotating file.

Every line carries the execution id and sid of the execution the code was
working for (``-`` when none), and passes a redaction filter that scrubs
bearer tokens, Authorization values and the configured keys.
``LOG_PATH`` names a directory (as in the reference deployments); the log file
inside it is ``rpa-gateway.log``, rotated at 50 MB with 5 kept.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
from pathlib import Path

from rpa_gateway.config import Settings
from rpa_gateway.telemetry.context import current_execution
from rpa_gateway.telemetry.redaction import redact

LOG_FILE_NAME = "rpa-gateway.log"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(execution_id)s %(sid)s]: %(message)s"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class RecordFilter(logging.Filter):
    """Every record, on every handler: the execution it concerns, secrets scrubbed, and
    control characters escaped, so a caller's ``sid`` or ``project_id`` holding a newline
    cannot forge log lines (tracebacks keep theirs).  One filter: the message is formatted
    once for all three."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        execution = current_execution.get()
        if execution is None:
            record.execution_id = record.sid = "-"
        else:
            record.execution_id = execution.id
            sid = execution.request.sid
            record.sid = sid if sid.isprintable() else _escape(sid)
        message = record.getMessage()
        cleaned = redact(message, self._secrets)
        if not cleaned.isprintable():
            cleaned = _escape(cleaned)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, self._secrets)
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "execution_id": getattr(record, "execution_id", "-"),
            "sid": getattr(record, "sid", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    formatter: logging.Formatter = (
        JsonFormatter() if settings.rpa_log_json else logging.Formatter(_TEXT_FORMAT)
    )
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.log_path:
        directory = Path(settings.log_path)
        directory.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                directory / LOG_FILE_NAME,
                maxBytes=50 * 1024 * 1024,
                backupCount=5,
                encoding="utf-8",
            )
        )
    key = settings.rpa_token_key.get_secret_value() if settings.rpa_token_key else ""
    # No format prints the caller's file and line, thread or process: not gathering them
    # for every record is the logging HOWTO's advice ("Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        # On the handler, so records of every logger pass through it.
        handler.addFilter(RecordFilter((key,)))
        root.addHandler(handler)
    root.setLevel(settings.log_level)
