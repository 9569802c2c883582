"""Model files and checkpoints, in layers that import only downwards:

- :mod:`.container`: the sealed ``.npz`` of named arrays plus a JSON config (seal, members,
  header checks, atomic write, refusal of anything malformed, never unpickling); it knows nothing
  of estimators;
- :mod:`.reading` and :mod:`.state`: an estimator and its training state from a container's
  ``(config, arrays)``, checked against the network, in what every format shares;
- :mod:`.format1` (read only) and :mod:`.format2` (written and read): where each format keeps
  the network and its weights;
- :mod:`.models`: :func:`save_model`, :func:`load_model`, :func:`save_checkpoint`,
  :func:`load_checkpoint` (also importable from :mod:`tinycnn.io`).
"""

from .models import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint, save_model

__all__ = ["save_model", "load_model", "save_checkpoint", "load_checkpoint", "FORMAT_VERSION"]
