"""Reading model files and checkpoints of format 1, the one-conv-layer network's (tinycnn no
longer writes them; every one written still loads, predicts and resumes as it did).

Members: ``params.kernel`` ``(F, C, k, k)``, ``params.bias_conv`` ``(F,)``, ``params.W_fc``
``(F*H'*W', O)``, ``params.b_fc`` ``(O,)`` in the estimator's dtype; ``input_mean``,
``input_std`` ``(C,)`` float64; ``classes`` ``(O,)`` for a classifier; a checkpoint adds
``state.optimizer.*`` and ``state.best.<kernel|bias_conv|W_fc|b_fc>`` (see :mod:`.state`). The
network's shape is ``fitted.spec`` (:class:`tinycnn.network.ConvNetSpec`'s fields), which must be
the network the stored parameters (``n_filters``, ``kernel_size``, ...) give.
"""

from __future__ import annotations

from typing import Any

from ..network import ConvNetParams, ConvNetSpec
from ._json import is_int
from .reading import ModelReader

VERSION = 1
PARAM_SUFFIXES = ConvNetParams._fields  # ("kernel", "bias_conv", "W_fc", "b_fc")
SPEC_FIELDS = ("in_channels", "height", "width", "n_filters", "kernel_size", "stride", "pad")


class Format1Reader(ModelReader):
    def network(self, est: Any):
        from ..estimators._network import SHORTHAND_DEFAULTS, names_no_network, network_of

        spec_config = self.config["fitted"].get("spec")
        if not isinstance(spec_config, dict) or set(spec_config) != {*SPEC_FIELDS, "n_outputs"}:
            raise self.fail(f"fitted.spec is not a network shape: {spec_config!r}")
        for key, value in spec_config.items():
            if not is_int(value) or value < (0 if key == "pad" else 1):
                raise self.fail(f"fitted.spec.{key} = {value!r} is not a valid size")
        spec = ConvNetSpec(**{k: spec_config[k] for k in (*SPEC_FIELDS, "n_outputs")})
        if spec.out_h < 1 or spec.out_w < 1:
            raise self.fail(f"fitted.spec gives an empty conv output: {spec}")
        C, H, W = spec.in_channels, spec.height, spec.width
        if names_no_network(est):
            # Saved when the default network was this one (before issue 11's defaults): name
            # it, so that warm starts and partial_fit go on with the network the file holds.
            est.set_params(n_filters=SHORTHAND_DEFAULTS["n_filters"])
        try:
            implied = network_of(est, (C, H, W), spec.n_outputs)
        except ValueError as exc:
            raise self.fail(f"the parameters do not fit the stored network: {exc}") from None
        if implied.spec != spec:
            raise self.fail(f"fitted.spec {spec} disagrees with the parameters ({implied.spec})")
        return implied, PARAM_SUFFIXES
