"""Saving and loading estimators: :func:`save_model`, :func:`load_model`,
:func:`save_checkpoint`, :func:`load_checkpoint`.

Everything is written in format 2 (:mod:`.format2`); files of format 1 (:mod:`.format1`) are
read as before. Saving runs the reader on the bytes before they are written, so nothing is
written that loading would refuse (a ``ValueError`` instead).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelFileError
from ..training import TrainingState
from . import container, format1, format2

FORMAT_VERSION = format2.VERSION  # the format written
READERS = {format1.VERSION: format1.Format1Reader, format2.VERSION: format2.Format2Reader}


def save_model(est: Any, path: Any) -> None:
    """Write the fitted estimator ``est`` to ``path`` atomically (see :mod:`.format2`)."""
    _check_fitted(est)
    history = getattr(est, "_history", None)
    config, members = format2.model_content(
        est, est.params_, est.input_mean_, est.input_std_, history, "model"
    )
    _save(path, config, members)


def save_checkpoint(path: Any, est: Any, state: TrainingState) -> None:
    """Write a checkpoint: the model as it is after ``state.epoch`` epochs (``tinycnn.load``
    reads it as that model) plus the training state (optimizer, random generator, history,
    best weights) that :func:`load_checkpoint` returns for ``est.fit(X, y, resume=state)``."""
    _check_fitted(est)
    if not isinstance(state, TrainingState):
        raise TypeError(f"state must be a TrainingState, got {type(state).__name__}")
    config, members = format2.checkpoint_content(est, state)
    _save(path, config, members)


def load_model(path: Any):
    """The fitted estimator stored in ``path`` (a model file or a checkpoint, of any format).

    Raises :class:`tinycnn.ModelFileError` (a ``ValueError``) naming the file if it is damaged,
    foreign or inconsistent; ``FileNotFoundError`` if there is no such file.
    """
    est, _ = _read(os.fspath(path), container.read_bytes(path), want_state=False)
    return est


def load_checkpoint(path: Any) -> tuple[Any, TrainingState]:
    """``(est, state)`` from a checkpoint written by :func:`save_checkpoint`; continue with
    ``est.fit(X, y, resume=state)``. A plain model file is refused (it has no state)."""
    return _read(os.fspath(path), container.read_bytes(path), want_state=True)


def _check_fitted(est: Any) -> None:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)


def _save(path: Any, config: dict[str, Any], members: dict[str, Any]) -> None:
    data = container.pack(config, members)
    # Never write what load would refuse (say, a non-finite weight or input_std): check first.
    try:
        _read(os.fspath(path), data, want_state=config["kind"] == "checkpoint")
    except ModelFileError as exc:
        raise ValueError(
            f"not writing {os.fspath(path)}: tinycnn.load would refuse it ({exc.reason})"
        ) from None
    container.write(path, data)


def _read(path: str, data: bytes, want_state: bool):
    try:
        config, arrays = container.unpack(path, data, READERS)
        return READERS[config["format_version"]](path, config, arrays).read(want_state)
    except ModelFileError:
        raise
    except Exception as exc:  # whatever else damage can cause, it is a damaged file
        raise ModelFileError(path, f"{type(exc).__name__}: {exc}") from None
