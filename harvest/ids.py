"""Safe ids and paths that stay inside the output folder.

Every id that harvest turns into a file or folder name (``roi_id``, chip id, image id,
``naip_id``, site, tile) must be a **safe id**:

- only ASCII letters, digits, ``_``, ``-`` and ``.``;
- 1 to :data:`MAX_ID_LENGTH` (200) characters;
- not starting with ``.`` (which also rules out ``.`` and ``..``): names starting with a dot
  are harvest's temporary and state names, skipped on resume and deleted by the start-up
  clean-up.

So an id can never hold a path separator, a drive, ``..`` or a control character, and
``OUT / sub / id`` is always a direct child of ``OUT / sub``. Ids are checked where they enter
(:func:`check_id`: the ROI table of ``sample --exclude`` and ``search``, the pairs table of
``fetch``, chip folders and status files read back by ``qa``, the HR images and ``naip_id`` of
``degrade``); a bad one is a one-line :class:`~harvest.errors.UnsafeIdError` naming the row
before anything is written. As a second line of defence every path the writers create, replace
or remove is checked by :func:`ensure_inside` to resolve (symlinks followed) inside its output
folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from harvest.errors import UnsafeIdError, UnsafePathError

MAX_ID_LENGTH = 200
"""Longest safe id: well below the 255-byte file-name limit, with room for suffixes."""

SAFE_ID_PATTERN = rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_ID_LENGTH - 1}}}"
"""The documented pattern (a full match is required)."""

_SAFE_ID_RE = re.compile(rf"\A{SAFE_ID_PATTERN}\Z")

SAFE_ID_RULE = (
    f"use only letters, digits, '_', '-' and '.' (1-{MAX_ID_LENGTH} characters, "
    "not starting with '.')"
)
"""The rule in words, as error messages state it."""

_SHOWN_CHARS = 160


def is_safe_id(value: object) -> bool:
    """Whether ``value`` is a string matching :data:`SAFE_ID_PATTERN`."""
    return isinstance(value, str) and _SAFE_ID_RE.match(value) is not None


def _shown(value: object) -> str:
    # repr() escapes newlines and control characters, so the message stays one line.
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 3]}..."


def check_id(value: object, *, field: str = "id", where: str = "", fix: str = "") -> str:
    """Return ``value`` when it is a safe id (see the module docstring), else raise.

    Args:
        value: The id as read (any type: a non-string is refused).
        field: Its name, for the message (``"roi_id"``).
        where: Where it was read, for the message (``"pairs.parquet row 3"``).
        fix: What to do about it (default: fix the field where it was read).

    Returns:
        ``value`` unchanged.

    Raises:
        UnsafeIdError: a one-line message naming the place, the field and the value.
    """
    if is_safe_id(value):
        return str(value)
    prefix = f"{where}: " if where else ""
    todo = fix or f"correct the {field} and run again"
    raise UnsafeIdError(
        f"{prefix}{field} {_shown(value)} cannot be used as a file or folder name: "
        f"{SAFE_ID_RULE}; {todo}"
    )


def check_ids(values: Iterable[object], *, field: str, source: str | os.PathLike[str]) -> None:
    """Check every id of a table column; the first bad one raises naming its row.

    Args:
        values: The column, in file order (rows are counted from 1).
        field: Column name.
        source: The file (or what stands for it) the rows come from.

    Raises:
        UnsafeIdError: a value is not a safe id.
    """
    for row, value in enumerate(values, start=1):
        if not is_safe_id(value):
            check_id(value, field=field, where=f"{source} row {row}")


def _resolved(path: Path) -> Path:
    # strict=False: the path may not exist yet; existing parts (symlinks too) are followed.
    return Path(os.path.abspath(path)).resolve(strict=False)


def is_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` resolves (symlinks followed) strictly inside ``root`` (resolved too)."""
    target, base = _resolved(Path(path)), _resolved(Path(root))
    return target != base and target.is_relative_to(base)


def ensure_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Return ``path`` (as given) when it resolves strictly inside ``root``, else raise.

    Both are resolved first, so ``..`` components, absolute paths and symlinks anywhere along
    the path (the last component included) that lead out of ``root`` are refused. Call it right
    before a path is written, replaced or removed.

    Raises:
        UnsafePathError: a one-line message naming the path and where it leads.
    """
    p = Path(path)
    if not is_inside(p, root):
        raise UnsafePathError(
            f"refusing to write or remove {p}: it resolves to {_resolved(p)}, outside the "
            f"output folder {_resolved(Path(root))}; remove the symbolic link or fix the id "
            "that named it"
        )
    return p
