"""The slide status machine: which status may follow which."""

from __future__ import annotations

from papreview.cases.models import SlideStatus

S = SlideStatus

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.UPLOADED: frozenset({S.QUEUED, S.FAILED}),
    S.QUEUED: frozenset({S.ANALYSING, S.FAILED}),
    # Back to queued when a worker died mid-job and the job is delivered again.
    S.ANALYSING: frozenset({S.ANALYSED, S.FAILED, S.QUEUED}),
    S.ANALYSED: frozenset({S.IN_REVIEW, S.QUEUED}),  # queued again: re-analysis
    S.IN_REVIEW: frozenset({S.SIGNED_OUT, S.QUEUED, S.REFERRED}),
    # A referred slide waits for a pathologist's sign-out; it is not re-analysed under them.
    S.REFERRED: frozenset({S.SIGNED_OUT}),
    S.SIGNED_OUT: frozenset({S.IN_REVIEW}),  # reopen
    S.FAILED: frozenset({S.QUEUED}),  # retry
}

# Statuses in which reviewers may change cells (analysed moves to in_review on the first change).
REVIEWABLE_STATUSES: frozenset[str] = frozenset({S.ANALYSED, S.IN_REVIEW, S.REFERRED})


def can_transition(current: str, to: str) -> bool:
    return to in ALLOWED_TRANSITIONS.get(current, frozenset())
