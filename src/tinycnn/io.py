"""Model files and checkpoints: :func:`save_model`, :func:`load_model`, :func:`save_checkpoint`,
:func:`load_checkpoint`, where code has always imported them from. The code is in
:mod:`tinycnn.files` (the container, and formats 1 and 2 on top of it)."""

# The seal's form, for tests that craft files.
from .files.container import SEAL_LENGTH, SEAL_PREFIX, ZIP_DATE  # noqa: F401
from .files.models import (
    FORMAT_VERSION,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)

__all__ = ["save_model", "load_model", "save_checkpoint", "load_checkpoint", "FORMAT_VERSION"]
