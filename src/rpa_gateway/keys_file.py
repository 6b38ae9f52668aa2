"""``RPA_API_KEYS_FILE`` read again when it changes and on SIGHUP: revoking or adding a
key needs no restart.

The file is checked every :data:`CHECK_SECONDS` (its size, modification time and
inode: a file replaced by a rename counts).  A file that cannot be read, holds a bad
entry or is empty leaves the keys as they were, with an error in the log: a file
caught half-written must not lock every caller out.  The log gives the number of
keys, never a key.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from rpa_gateway.access import ApiKeys, parse_entries, read_entries
from rpa_gateway.config import Settings

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0

_Signature = tuple[int, int, int] | None


def _signature(path: Path) -> _Signature:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class KeysFile:
    """Keeps ``keys`` to the fixed entries (``RPA_API_KEYS``) plus the file's."""

    def __init__(self, path: Path, keys: ApiKeys, fixed: list[bytes]) -> None:
        self._path = path
        self._keys = keys
        self._fixed = fixed
        self._seen = _signature(path)

    def reload(self, why: str) -> None:
        self._seen = _signature(self._path)
        try:
            entries = read_entries(self._path)
        except ValueError as exc:
            log.error(
                "RPA_API_KEYS_FILE not reloaded (%s): %s; the keys stay as they were", why, exc
            )
            return
        if not entries:
            log.error(
                "RPA_API_KEYS_FILE not reloaded (%s): %s holds no key; the keys stay as they"
                " were (unset RPA_API_KEYS_FILE to admit every token)",
                why,
                self._path,
            )
            return
        before = len(self._keys)
        self._keys.replace([*self._fixed, *entries])
        log.info(
            "RPA_API_KEYS_FILE reloaded (%s): %d keys admitted (%d before)",
            why,
            len(self._keys),
            before,
        )

    @classmethod
    def of(cls, settings: Settings) -> KeysFile | None:
        """The settings' keys file to keep up to date, when they name one."""
        path, keys = settings.rpa_api_keys_file, settings.api_keys
        if path is None or keys is None:
            return None
        listed = settings.rpa_api_keys
        fixed = (
            parse_entries(listed.get_secret_value().split(","), "RPA_API_KEYS") if listed else []
        )
        return cls(path, keys, fixed)

    async def watch(self) -> None:
        """Reloads on every change, until cancelled."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if _signature(self._path) != self._seen:
                self.reload("the file changed")


__all__ = ["KeysFile"]
