"""Names read from annotation files (video ids, expression ids, frame names, object ids) are data,
not paths: the checks that keep them so, shared by the readers (``data/base.py``), ``predict``,
``evaluate``, the submission zip and the mask writers (``results.py``).

``name_problem(name, nested)`` says what is wrong with a name (``None`` when it is plain), and
``safe_join(root, *parts)`` builds a path from names and refuses one that leaves ``root``.
The check is lexical (``..``, absolute parts, ``/`` inside a part): symlinks that a user put inside a
data root or output folder are followed on purpose, since datasets are often assembled from links,
and a name can never create one.
"""

from __future__ import annotations

import os
from pathlib import Path


class UnsafePathError(ValueError):
    """A path built from names would leave its root folder (the message names both)."""


def name_problem(name: object, nested: bool = False) -> str | None:
    """What makes ``name`` unusable as a file-system name, or None if it is a plain name.

    Refused: non-strings (other than ints), the empty string, control characters, backslashes,
    absolute paths, and ``..`` / ``.`` / empty components. ``nested=True`` allows ``/`` between plain
    parts (ReVOS video ids such as ``UVO/all/-fbscFfkh4M``); otherwise ``/`` is refused too.
    """
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        return f"a {type(name).__name__}, not a string"
    text = str(name)
    if not text:
        return "empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "a control character"
    if "\\" in text:
        return "a backslash"
    if text.startswith("/") or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        return "an absolute path"
    parts = text.split("/")
    if len(parts) > 1 and not nested:
        return "a '/' (this benchmark's names are single path components)"
    for part in parts:
        if part == "":
            return "an empty path component"
        if part in (".", ".."):
            return f"a {part!r} component"
    return None


def safe_join(root: str | Path, *parts: object) -> Path:
    """``root / part / ...``, refused with ``UnsafePathError`` unless it stays inside ``root``.

    Each part may hold ``/`` between plain components (nested ids); ``..``, absolute parts,
    backslashes and control characters are refused whatever the reader allowed.
    """
    root = Path(root)
    for part in parts:
        problem = name_problem(part, nested=True)
        if problem is not None:
            raise UnsafePathError(f"refusing to build a path under {root} from {str(part)!r}: it has {problem}")
    path = root.joinpath(*(str(p) for p in parts))
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.abspath(path))
    if full != base and not full.startswith(base.rstrip(os.sep) + os.sep):
        raise UnsafePathError(f"refusing path {path}: it resolves outside {root}")
    return path


def safe_member(*parts: object) -> str:
    """A '/'-joined relative name (a zip member) from plain parts, refused like ``safe_join``."""
    for part in parts:
        problem = name_problem(part, nested=True)
        if problem is not None:
            raise UnsafePathError(f"refusing archive member from {str(part)!r}: it has {problem}")
    return "/".join(str(p) for p in parts)
