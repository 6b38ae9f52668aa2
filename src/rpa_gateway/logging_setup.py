"""Process logging: one line per event, text or JSON, to stderr and optionally a rotating file.

``LOG_PATH`` names a directory (as in the reference deployments); the log file
inside it is ``rpa-gateway.log``, rotated at 50 MB with 5 kept.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path

from rpa_gateway.config import Settings

LOG_FILE_NAME = "rpa-gateway.log"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
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
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
