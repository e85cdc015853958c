from __future__ import annotations

from typing import TYPE_CHECKING

from papreview.core.exceptions import ConflictError

if TYPE_CHECKING:
    from papreview.review.models import Cell


class StaleVersionError(ConflictError):
    """The cell changed since the client read it; `cell` is the current state."""

    code = "stale_version"

    def __init__(self, message: str, *, cell: Cell) -> None:
        super().__init__(message)
        self.cell = cell


class CellNotEditableError(ConflictError):
    """The slide is not in a status where cells may change (e.g. signed out, analysing)."""

    code = "slide_not_reviewable"
