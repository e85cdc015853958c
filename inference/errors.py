"""Typed errors. Those a user causes (bad file, bad checkpoint) derive from InputError."""


class InferenceError(Exception):
    """Base class for every error this library raises on purpose."""


class InputError(InferenceError):
    """The input is at fault (not our code): show the message to the user, do not retry."""


class UnreadableSlideError(InputError):
    """The file is empty, truncated, not an image, or in a format we cannot read."""


class SlideTooLargeError(InputError):
    """The image declares more pixels than the configured limit (decompression-bomb guard)."""


class CheckpointError(InputError):
    """A checkpoint is corrupt, from another model, or does not match what was asked for."""
