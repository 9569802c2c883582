"""Export a fitted estimator to PyTorch and ONNX, and bring PyTorch weights back.

Both exports compute, in float32, on RAW images ``x`` ``(N, C, H, W)``::

    x' = (x - input_mean[c]) / input_std[c]      # the estimator's standardisation
    y  = layer_L(... layer_1(x'))                 # est.network_, output Dense included: (N, O)

``y`` is a classifier's logits over ``classes_`` or a regressor's predictions. Each tinycnn layer
becomes one PyTorch layer and one ONNX node:

    ==========================  ==================================  ==========================
    tinycnn                     PyTorch                             ONNX
    ==========================  ==================================  ==========================
    ``Conv2d(F, k, s, p)``      ``nn.Conv2d(C, F, k, s, p)``        ``Conv``
    ``ReLU()``                  ``nn.ReLU()``                       ``Relu``
    ``MaxPool2d(n, s)``         ``nn.MaxPool2d(n, s)``              ``MaxPool``
    ``AvgPool2d(n, s)``         ``nn.AvgPool2d(n, s)``              ``AveragePool``
    ``Flatten()``               ``nn.Flatten()``                    ``Flatten(axis=1)``
    ``Dense(U)``                ``nn.Linear(n_in, U)``              ``Gemm(transB=1)``
    ==========================  ==================================  ==========================

A pooling stride ``None`` is the size; every pooling drops a partial window at the edge (floor
mode, tinycnn's and PyTorch's default; ONNX ``ceil_mode=0`` with the strides spelled out, since
ONNX's default stride is 1). The layout is PyTorch's and the flatten is C order of ``(C, H, W)``,
so nothing is permuted: a ``Linear.weight`` is the dense ``W.T``.

The layers are named after their kind (``conv``, ``relu``, ``maxpool``, ``avgpool``,
``flatten``, ``fc``), numbered from 1 when a kind occurs more than once: the one-conv-layer
network is ``conv``, ``relu``, ``flatten``, ``fc``; LeNet-5 is ``conv1``, ``relu1``,
``maxpool1``, ``conv2``, ... ``fc3``. The PyTorch state dict keys (``conv1.weight``, ...) are the
ONNX initializer names, holding the same arrays.

torch, onnx and onnxruntime are optional: they are imported here, inside the functions, and a
missing one raises ``ImportError`` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .layer_string import layers_to_string
from .layers import AvgPool2d, Conv2d, Dense, Flatten, Layer, LayerError, MaxPool2d, ReLU
from .model import Sequential

if TYPE_CHECKING:  # pragma: no cover - for annotations only
    import onnx
    import torch

__all__ = ["to_torch", "to_onnx", "from_torch", "ONNX_OPSET"]

# Opset 17 (IR version 8): every onnxruntime the `onnx` extra allows (>= 1.17) runs it, and it
# has every op used here (Sub, Div, Conv, Relu, MaxPool, AveragePool, Flatten, Gemm) in its
# current form.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

_FITTED_ATTRIBUTES = ("network_", "params_", "input_mean_", "input_std_")

# The name of each kind of layer, in the PyTorch module and in the ONNX graph.
_KIND_NAMES = {
    Conv2d: "conv",
    ReLU: "relu",
    MaxPool2d: "maxpool",
    AvgPool2d: "avgpool",
    Flatten: "flatten",
    Dense: "fc",
}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "exporting to or from PyTorch needs torch, which is not installed; "
            "install it with: pip install 'tinycnn[torch]'"
        ) from exc
    return torch


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "exporting to ONNX needs the onnx package, which is not installed; "
            "install it with: pip install 'tinycnn[onnx]'"
        ) from exc
    return onnx


def _not_fitted(message: str) -> Exception:
    """scikit-learn's NotFittedError (a ValueError) when scikit-learn is there, else ValueError."""
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return ValueError(message)
    return NotFittedError(message)


def _check_fitted(est: Any, name: str) -> None:
    missing = [attr for attr in _FITTED_ATTRIBUTES if not hasattr(est, attr)]
    if missing:
        raise _not_fitted(
            f"{name} must be a fitted tinycnn estimator, but this {type(est).__name__} has no "
            f"{', '.join(missing)}; call fit before exporting"
        )


def _is_classifier(est: Any) -> bool:
    return getattr(est, "classes_", None) is not None


def _layer_names(layers: Sequence[Layer]) -> list[str]:
    """The name of each layer in the exports: its kind, numbered from 1 if the kind repeats."""
    kinds = [_KIND_NAMES[type(layer)] for layer in layers]
    seen: dict[str, int] = {}
    names = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(f"{kind}{seen[kind]}" if kinds.count(kind) > 1 else kind)
    return names


def _float32_state(est: Any) -> dict[str, np.ndarray]:
    """The arrays both exports hold, float32 in PyTorch's layouts, by state dict key:
    ``input_mean``/``input_std`` ``(1, C, 1, 1)``; per conv ``<name>.weight`` ``(F, C, k, k)``
    and ``<name>.bias`` ``(F,)``; per dense ``<name>.weight`` ``(units, n_in)`` (``W.T``) and
    ``<name>.bias`` ``(units,)``."""
    network = est.network_
    stats_shape = (1, network.input_shape[0], 1, 1)
    arrays = {
        "input_mean": np.asarray(est.input_mean_, dtype=np.float64).reshape(stats_shape),
        "input_std": np.asarray(est.input_std_, dtype=np.float64).reshape(stats_shape),
    }
    params = iter(est.params_)
    for name, layer in zip(_layer_names(network.layers), network.layers):
        if isinstance(layer, (Conv2d, Dense)):
            weight, bias = next(params), next(params)
            arrays[f"{name}.weight"] = weight if isinstance(layer, Conv2d) else weight.T
            arrays[f"{name}.bias"] = bias
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}


def _torch_layer(layer: Layer, shape: tuple[int, ...], nn: Any) -> Any:
    """The PyTorch layer computing ``layer`` on inputs of per-sample ``shape``."""
    if isinstance(layer, Conv2d):
        return nn.Conv2d(
            shape[0], layer.filters, layer.kernel_size, stride=layer.stride, padding=layer.pad
        )
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        pool = nn.MaxPool2d if isinstance(layer, MaxPool2d) else nn.AvgPool2d
        return pool(layer.size, stride=_pool_stride(layer), padding=0, ceil_mode=False)
    if isinstance(layer, Flatten):
        return nn.Flatten(start_dim=1)
    assert isinstance(layer, Dense), layer
    return nn.Linear(shape[0], layer.units)


def _pool_stride(layer: MaxPool2d | AvgPool2d) -> int:
    return layer.size if layer.stride is None else layer.stride


def to_torch(est: Any) -> torch.nn.Module:
    """A float32 ``torch.nn.Module`` that computes what the fitted ``est`` computes.

    It takes RAW float32 images ``(N, C, H, W)`` (it standardises them itself, with buffers
    ``input_mean``/``input_std`` ``(1, C, 1, 1)``) and returns ``(N, O)``: the logits over
    ``est.classes_`` for a classifier (``argmax`` gives the class index), the predictions for a
    regressor. Its children are the layers of ``est.network_`` in order (``nn.Conv2d``,
    ``nn.ReLU``, ``nn.MaxPool2d``, ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Linear`` with
    ``weight = W.T``), named as the module docstring says: for the one-conv-layer network
    ``conv``, ``relu``, ``flatten``, ``fc``. Train it further as any module and bring the
    weights back with :func:`from_torch`.
    """
    torch = _import_torch()
    from ._torch_net import TinyCNNModule

    _check_fitted(est, "est")
    network = est.network_
    names = _layer_names(network.layers)
    layers = [
        (name, _torch_layer(layer, shape, torch.nn))
        for name, layer, shape in zip(names, network.layers, network.shapes)
    ]
    module = TinyCNNModule(network.input_shape, layers)
    state = _float32_state(est)
    module.load_state_dict({name: torch.from_numpy(a) for name, a in state.items()}, strict=True)
    return module


def to_onnx(est: Any, path: str | os.PathLike[str]) -> None:
    """Write the fitted ``est`` to ``path`` as an ONNX model (opset :data:`ONNX_OPSET`).

    Graph: ``Sub``, ``Div`` (standardisation), then one node per layer of ``est.network_``
    (``Conv``, ``Relu``, ``MaxPool``, ``AveragePool``, ``Flatten(axis=1)``, ``Gemm``), each named
    as its layer in :func:`to_torch`'s module. Input ``"x"``: float32 ``("batch", C, H, W)`` with
    a dynamic batch axis; output ``"logits"`` (classifier, over ``est.classes_``, which are also
    stored as JSON in the model's metadata under ``"classes"``) or ``"outputs"`` (regressor):
    float32 ``("batch", O)``. The model is checked with ``onnx.checker`` (with shape inference)
    before it is written, atomically.
    """
    onnx = _import_onnx()
    _check_fitted(est, "est")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    from ._files import write_bytes

    model = _onnx_model(est, onnx)
    onnx.checker.check_model(model, full_check=True)
    write_bytes(path, model.SerializeToString())


def _onnx_node(helper: Any, layer: Layer, name: str, source: str, output: str) -> Any:
    """The ONNX node computing ``layer`` (named ``name``) from ``source`` into ``output``."""
    if isinstance(layer, Conv2d):
        k, s, p = layer.kernel_size, layer.stride, layer.pad
        return helper.make_node(
            "Conv",
            [source, f"{name}.weight", f"{name}.bias"],
            [output],
            name=name,
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[p, p, p, p],  # (top, left, bottom, right)
            dilations=[1, 1],
            group=1,
        )
    if isinstance(layer, ReLU):
        return helper.make_node("Relu", [source], [output], name=name)
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        n, s = layer.size, _pool_stride(layer)
        extra = {"dilations": [1, 1]} if isinstance(layer, MaxPool2d) else {"count_include_pad": 0}
        return helper.make_node(
            "MaxPool" if isinstance(layer, MaxPool2d) else "AveragePool",
            [source],
            [output],
            name=name,
            kernel_shape=[n, n],
            strides=[s, s],  # ONNX's default is 1, not the size
            pads=[0, 0, 0, 0],
            ceil_mode=0,  # floor: a partial window at the edge is dropped
            **extra,
        )
    if isinstance(layer, Flatten):  # C order of (C, H, W); flat input passes unchanged
        return helper.make_node("Flatten", [source], [output], name=name, axis=1)
    assert isinstance(layer, Dense), layer
    # flat @ weight.T + bias = flat @ W + b
    return helper.make_node(
        "Gemm", [source, f"{name}.weight", f"{name}.bias"], [output], name=name, transB=1
    )


def _onnx_model(est: Any, onnx: Any) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    from ._version import __version__

    network = est.network_
    output_name = "logits" if _is_classifier(est) else "outputs"
    initializers = [numpy_helper.from_array(a, name=n) for n, a in _float32_state(est).items()]
    nodes = [
        helper.make_node("Sub", ["x", "input_mean"], ["centered"], name="standardize_sub"),
        helper.make_node("Div", ["centered", "input_std"], ["standardized"], name="standardize"),
    ]
    source = "standardized"
    names = _layer_names(network.layers)
    for i, (name, layer) in enumerate(zip(names, network.layers)):
        output = output_name if i == len(names) - 1 else name
        nodes.append(_onnx_node(helper, layer, name, source, output))
        source = output
    image = list(network.input_shape)
    graph = helper.make_graph(
        nodes,
        "tinycnn",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *image])],
        outputs=[
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, ["batch", network.n_outputs]
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="tinycnn",
        producer_version=__version__,
        doc_string=(
            f"tinycnn {type(est).__name__}: standardise -> {layers_to_string(network.layers)}, "
            "on raw float32 images (batch, C, H, W)"
        ),
    )
    if _is_classifier(est):
        with contextlib.suppress(TypeError):  # classes that JSON cannot spell are left out
            classes = json.dumps(np.asarray(est.classes_).tolist())
            helper.set_model_props(model, {"classes": classes})
    return model


def from_torch(module: torch.nn.Module, like: Any) -> Any:
    """A NEW fitted estimator like ``like``, whose network and weights are ``module``'s.

    ``module`` is what :func:`to_torch` returns (possibly trained further, in float32 or float64,
    its layers possibly replaced by others of the kinds :func:`to_torch` makes), or a wrapper
    holding it in ``.module`` (``DistributedDataParallel``, ``DataParallel``) or ``._orig_mod``
    (``torch.compile``). Its layers are read in order and must fit ``like``'s images and end in
    an ``nn.Linear`` of ``like``'s number of outputs.

    The result is a clone of ``like`` (same class and parameters) with copies of ``like``'s
    public fitted attributes (``classes_``, ``image_shape_``, ``loss_curve_``...), except that
    ``network_`` is the module's stack, ``params_`` its weights in ``like``'s dtype, and
    ``input_mean_``/``input_std_`` its standardisation buffers: it predicts what the module
    computes. When the stack is not ``like.network_``, its ``layers`` parameter is the module's
    hidden stack (without the output ``Linear``, and without a last ``Flatten`` the estimator
    adds itself; a string if ``like``'s was one) and the one-conv-layer shorthand parameters are
    None, so that ``warm_start=True`` and ``partial_fit`` train that network. It is what
    ``tinycnn.load`` would give for a model file of those weights: no private training state
    comes along (the optimizer's moments belong to the weights before PyTorch changed them), so
    a later ``partial_fit`` starts a fresh optimizer. ``like`` itself is not changed;
    ``loss_curve_`` and ``n_iter_`` stay ``like``'s, since the PyTorch training is not recorded
    there.

    Raises ``TypeError`` when ``module`` is not such a module, ``ValueError`` naming every layer
    of a kind or with settings tinycnn does not have, the layer that does not fit ``like``'s
    images or outputs, or the weights that are not finite.
    """
    torch = _import_torch()
    from ._torch_net import TinyCNNModule
    from .estimators._network import ends_flat, network_of

    _check_fitted(like, "like")
    net = _unwrap(module, torch, TinyCNNModule)
    stack, named = _read_stack(net, like.network_, torch)
    not_finite = [name for name, a in named.items() if not np.isfinite(a).all()]
    if not_finite:
        raise ValueError(f"module's {', '.join(not_finite)} must be finite, but contain NaN/inf")
    mean, std = (_as_float64(getattr(net, name), torch) for name in ("input_mean", "input_std"))
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError("module's input_mean and input_std must be finite, but contain NaN/inf")
    if not (std > 0).all():
        raise ValueError(f"module's input_std must be > 0, got {std.ravel()}")

    est = _fitted_clone(like)
    if [_canonical(layer) for layer in like.network_.layers] == list(stack.layers):
        stack = like.network_  # like's own spelling of the same layers (MaxPool2d(2, 2))
    else:
        hidden = list(stack.layers[:-1])  # without the output Dense
        if hidden and isinstance(hidden[-1], Flatten) and not ends_flat(hidden[:-1]):
            hidden.pop()  # the estimator puts a Flatten before its output Dense itself
        as_text = isinstance(like.layers, str) and len(hidden) > 0  # "" is no stack
        est.set_params(
            layers=layers_to_string(hidden) if as_text else tuple(hidden),
            n_filters=None,
            kernel_size=None,
            stride=None,
            padding=None,
        )
    network = network_of(est, stack.input_shape, stack.n_outputs)
    assert network.stack == stack, (network.stack, stack)
    dtype = np.asarray(like.params_[0]).dtype
    est.network_ = network.stack
    est.params_ = network.wrap([np.ascontiguousarray(a, dtype=dtype) for a in named.values()])
    if network.spec is not None:
        est.spec_ = network.spec
    elif hasattr(est, "spec_"):
        del est.spec_  # a stack has no one-conv-layer spec
    est.input_mean_ = mean.reshape(-1)
    est.input_std_ = std.reshape(-1)
    return est


def _canonical(layer: Layer) -> Layer:
    """``layer`` as :func:`from_torch` reads it back: a pooling stride equal to the window is
    None (PyTorch keeps no difference between the two)."""
    if isinstance(layer, (MaxPool2d, AvgPool2d)) and layer.stride == layer.size:
        return type(layer)(layer.size)
    return layer


def _as_float64(tensor: Any, torch: Any) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def _fitted_clone(like: Any) -> Any:
    """An unfitted clone of ``like`` given deep copies of its public fitted attributes (the
    scikit-learn convention: names ending, not starting, with an underscore)."""
    from sklearn.base import clone

    est = clone(like)
    for name, value in vars(like).items():
        if name.endswith("_") and not name.startswith("_"):
            setattr(est, name, copy.deepcopy(value))
    return est


def _unwrap(module: Any, torch: Any, module_class: type) -> Any:
    current = module
    for _ in range(8):  # wrappers nest a few levels at most
        if isinstance(current, module_class):
            return current
        inner = getattr(current, "module", None)
        if inner is None:
            inner = getattr(current, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            break
        current = inner
    raise TypeError(
        "module must be the torch.nn.Module that tinycnn.export.to_torch returns (or a "
        "DistributedDataParallel/DataParallel/compiled wrapper of one), "
        f"got {type(module).__name__}"
    )


def _describe(network: Sequential) -> str:
    C, H, W = network.input_shape
    return f"{C}x{H}x{W} images and {network.n_outputs} outputs"


def _read_stack(net: Any, like: Sequential, torch: Any) -> tuple[Sequential, dict[str, np.ndarray]]:
    """The tinycnn stack ``net``'s children compute on ``like``'s images, and its parameters in
    the stack's order by state dict key (float64, tinycnn's layouts: a Dense ``W`` is ``(n_in,
    units)``); ``ValueError`` naming every layer tinycnn cannot run, or the first that does not
    fit ``like``'s images or outputs."""
    header = f"module is not a tinycnn stack for like's {_describe(like)}: "
    C, H, W = like.input_shape
    problems = []
    image_shape = tuple(getattr(net, "image_shape", ()))
    if image_shape != like.input_shape:
        problems.append(f"its image_shape is {image_shape}, like's images are {(C, H, W)}")
    for name in ("input_mean", "input_std"):
        buffer = getattr(net, name, None)
        shape = tuple(buffer.shape) if isinstance(buffer, torch.Tensor) else None
        if shape != (1, C, 1, 1):
            problems.append(f"its {name} has shape {shape}, expected {(1, C, 1, 1)}")
    children = list(net.named_children())
    layers = []
    for name, child in children:
        layer = _layer_of(name, child, torch.nn, problems)
        layers.append(layer)
    if not children:
        problems.append("it has no layers")
    elif problems == [] and not isinstance(layers[-1], Dense):
        name, child = children[-1]
        problems.append(f"its last layer {name} is {child!r}, not the output nn.Linear")
    if problems:
        raise ValueError(header + "; ".join(problems))

    shape: tuple[int, ...] = like.input_shape
    arrays: dict[str, np.ndarray] = {}
    for (name, child), layer in zip(children, layers):
        try:
            out = layer.output_shape(shape)
        except LayerError as exc:
            raise ValueError(f"{header}{name} ({child!r}) does not fit: {exc}") from None
        if isinstance(layer, (Conv2d, Dense)):
            weight = _as_float64(child.weight, torch)
            got = {
                f"{name}.weight": weight if isinstance(layer, Conv2d) else weight.T,
                f"{name}.bias": _as_float64(child.bias, torch),
            }
            (weight_shape, bias_shape) = layer.param_shapes(shape)
            if got[f"{name}.weight"].shape != weight_shape:
                what = "input channels" if isinstance(layer, Conv2d) else "input features"
                raise ValueError(
                    f"{header}{name} ({child!r}) has the wrong number of {what}: it gets "
                    f"{_shape_text(shape)}"
                )
            if got[f"{name}.bias"].shape != bias_shape:
                raise ValueError(
                    f"{header}{name}.bias has shape {got[f'{name}.bias'].shape}, expected "
                    f"{bias_shape}"
                )
            arrays.update(got)
        shape = out
    if shape != (like.n_outputs,):
        name, child = children[-1]
        raise ValueError(
            f"{header}its last layer {name} ({child!r}) gives {shape[0]} outputs, like has "
            f"{like.n_outputs}"
        )
    return Sequential(layers, like.input_shape), arrays


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"images {shape[0]}x{shape[1]}x{shape[2]} (C x H x W)"
    return f"{shape[0]} features"


def _pair(value: Any) -> int | None:
    """An int or a pair of equal ints as one int; None for anything else (a rectangle)."""
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    return None


def _layer_of(name: str, child: Any, nn: Any, problems: list[str]) -> Layer | None:
    """The tinycnn layer ``child`` computes, or None after adding to ``problems`` why there is
    none. Only these exact classes are taken (a subclass may compute something else)."""
    kind = type(child)
    settings: list[str] = []

    def want(what: str, ok: bool) -> None:
        if not ok:
            settings.append(what)

    layer: Layer | None = None
    if kind is nn.Conv2d:
        k, s = _pair(child.kernel_size), _pair(child.stride)
        padding = child.padding
        if padding == "valid":
            p = 0
        elif padding == "same":  # PyTorch allows it with stride 1 only
            p = (k - 1) // 2 if k is not None and k % 2 == 1 else None
        else:
            p = _pair(padding)
        want("a square kernel", k is not None)
        want("equal strides", s is not None)
        want("equal padding on every side", p is not None)
        want("dilation 1", _pair(child.dilation) == 1)
        want("groups=1", child.groups == 1)
        want("padding_mode='zeros'", child.padding_mode == "zeros")
        want("a bias", child.bias is not None)
        if not settings:
            layer = Conv2d(child.out_channels, k, s, p)
    elif kind is nn.ReLU:
        layer = ReLU()
    elif kind in (nn.MaxPool2d, nn.AvgPool2d):
        n, s = _pair(child.kernel_size), _pair(child.stride)
        want("a square window", n is not None)
        want("equal strides", s is not None)
        want("padding 0", _pair(child.padding) == 0)
        want("ceil_mode=False", not child.ceil_mode)
        if kind is nn.MaxPool2d:
            want("dilation 1", _pair(child.dilation) == 1)
            want("return_indices=False", not child.return_indices)
        else:
            want("divisor_override=None", child.divisor_override is None)
        if not settings:
            pool = MaxPool2d if kind is nn.MaxPool2d else AvgPool2d
            layer = pool(n, None if s == n else s)
    elif kind is nn.Flatten:
        want("start_dim=1 and end_dim=-1", (child.start_dim, child.end_dim) == (1, -1))
        if not settings:
            layer = Flatten()
    elif kind is nn.Linear:
        want("a bias", child.bias is not None)
        if not settings:
            layer = Dense(child.out_features)
    else:
        problems.append(
            f"{name} is a {kind.__name__}, not one of the layers tinycnn has (nn.Conv2d, "
            "nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Linear)"
        )
        return None
    if settings:
        problems.append(f"{name} ({child!r}) needs {', '.join(settings)}")
    return layer
