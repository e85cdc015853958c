"""Errors users cause around analyses (turned into 4xx JSON at the API)."""

from __future__ import annotations

from papreview.core.exceptions import ConflictError


class AnalysisInProgressError(ConflictError):
    """The slide already has a queued or running analysis."""

    code = "analysis_in_progress"
