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
from rpa_gateway.telemetry.redaction import RedactingFilter

LOG_FILE_NAME = "rpa-gateway.log"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(execution_id)s %(sid)s]: %(message)s"


class ExecutionContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        execution = current_execution.get()
        record.execution_id = execution.id if execution is not None else "-"
        record.sid = execution.request.sid if execution is not None else "-"
        return True


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class EscapingFilter(logging.Filter):
    """Control characters in a message or the sid are written escaped, so a caller's ``sid``
    or ``project_id`` holding a newline cannot forge log lines (tracebacks keep theirs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            escaped = _escape(message)
            if escaped != message:
                record.msg, record.args = escaped, None
        sid = getattr(record, "sid", "-")
        if not sid.isprintable():
            record.sid = _escape(sid)
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
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        # On the handler, so records of every logger pass through them.
        handler.addFilter(ExecutionContextFilter())
        handler.addFilter(RedactingFilter((key,)))
        handler.addFilter(EscapingFilter())
        root.addHandler(handler)
    root.setLevel(settings.log_level)
