"""File names sent by clients: refuse the hostile ones at the edge, with a reason a person can
act on. (Services still reduce any name to a safe one; this is the clear 4xx in front.)"""

from __future__ import annotations

import unicodedata

MAX_NAME_BYTES = 255


def hostile_filename_reason(name: str) -> str | None:
    """Why a client's file name is refused, or None when it is acceptable."""
    if not name.strip():
        return "The file has no name."
    if "\ufffd" in name or any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        return "The file name is not valid UTF-8. Rename the file and upload it again."
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "The file name contains control characters. Rename the file and upload it again."
    if "/" in name or "\\" in name or name.strip() in (".", ".."):
        return "The file name contains a folder path (/, \\ or ..). Send the file's own name only."
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"The file name is longer than {MAX_NAME_BYTES} bytes. Shorten it."
    return None
