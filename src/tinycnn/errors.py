"""Exceptions a user of tinycnn can meet, beyond the built-in ``ValueError``/``TypeError``."""

from __future__ import annotations


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss (or non-finite weights).

    Raised instead of returning NaN weights. ``epoch`` is the 1-based epoch whose forward pass gave
    the non-finite loss (or whose update made the weights non-finite); ``reason`` says which.
    """

    def __init__(
        self, epoch: int, loss: float, lr: float | None = None, reason: str | None = None
    ) -> None:
        self.epoch = int(epoch)
        self.loss = float(loss)
        hint = f"lr={lr!r}" if lr is not None else "the learning rate"
        reason = reason if reason is not None else f"the loss became {self.loss!r}"
        super().__init__(
            f"training diverged at epoch {self.epoch}: {reason}; "
            f"try a smaller learning rate than {hint} or scale the input data"
        )


class ModelFileError(ValueError):
    """A model or checkpoint file is damaged, foreign or inconsistent; the message names the file.

    ``path`` is the file's path. Raised by ``tinycnn.load``/``tinycnn.io.load_checkpoint``
    instead of whatever the damage would otherwise cause (a zip, JSON or NumPy error).
    """

    def __init__(self, path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path!r} is not a valid tinycnn model file: {reason}")


class InputError(ValueError):
    """What the user gave (an option, a data set, a file, a run folder) cannot be used; the message
    says why and names it.

    Raised by the ``tinycnn`` command where it checks the user's input, and printed as one line:
    unlike an error of any other kind, which the command shows with its traceback as a bug.
    """
