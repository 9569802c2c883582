"""Export a fitted estimator to PyTorch and ONNX, and bring PyTorch weights back.

Both exports compute, in float32, on RAW images ``x`` ``(N, C, H, W)``::

    x' = (x - input_mean[c]) / input_std[c]      # the estimator's standardisation
    z  = conv2d(x', kernel, bias_conv, stride, pad)   # (N, F, H', W')
    y  = flatten(relu(z)) @ W_fc + b_fc           # (N, F*H'*W') -> (N, O)

with ``H' = (H + 2*pad - k)//stride + 1``. ``y`` is a classifier's logits over ``classes_`` or a
regressor's predictions. The layout is PyTorch's and the flatten is C order of ``(F, H', W')``, so
nothing is permuted: ``nn.Linear.weight`` is ``W_fc.T`` and ONNX's ``Gemm`` takes ``W_fc`` as is.

torch, onnx and onnxruntime are optional: they are imported here, inside the functions, and a
missing one raises ``ImportError`` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .network import ConvNetParams

if TYPE_CHECKING:  # pragma: no cover - for annotations only
    import onnx
    import torch

__all__ = ["to_torch", "to_onnx", "from_torch", "ONNX_OPSET"]

# Opset 17 (IR version 8): every onnxruntime the `onnx` extra allows (>= 1.17) runs it, and it
# has every op used here (Sub, Div, Conv, Relu, Flatten, Gemm) in its current form.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

_FITTED_ATTRIBUTES = ("spec_", "params_", "input_mean_", "input_std_")


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


def _float32_weights(est: Any) -> dict[str, np.ndarray]:
    """The arrays both exports need, in float32 and in the layouts both use.

    ``input_mean``/``input_std`` ``(1, C, 1, 1)``, ``kernel`` ``(F, C, k, k)``, ``bias_conv``
    ``(F,)``, ``W_fc`` ``(F*H'*W', O)``, ``b_fc`` ``(O,)``.
    """
    channels = est.spec_.in_channels
    stats_shape = (1, channels, 1, 1)
    arrays = {
        "input_mean": np.asarray(est.input_mean_, dtype=np.float64).reshape(stats_shape),
        "input_std": np.asarray(est.input_std_, dtype=np.float64).reshape(stats_shape),
        **est.params_._asdict(),
    }
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}


def to_torch(est: Any) -> torch.nn.Module:
    """A float32 ``torch.nn.Module`` that computes what the fitted ``est`` computes.

    It takes RAW float32 images ``(N, C, H, W)`` (it standardises them itself, with buffers
    ``input_mean``/``input_std`` ``(1, C, 1, 1)``) and returns ``(N, O)``: the logits over
    ``est.classes_`` for a classifier (``argmax`` gives the class index), the predictions for a
    regressor. Layers: ``conv`` (``nn.Conv2d``), ``relu``, ``flatten``, ``fc`` (``nn.Linear``,
    ``fc.weight = W_fc.T``). Train it further as any module and bring the weights back with
    :func:`from_torch`.
    """
    torch = _import_torch()
    from ._torch_net import TinyCNNModule

    _check_fitted(est, "est")
    spec = est.spec_
    module = TinyCNNModule(
        image_shape=(spec.in_channels, spec.height, spec.width),
        n_filters=spec.n_filters,
        kernel_size=spec.kernel_size,
        stride=spec.stride,
        pad=spec.pad,
        n_hidden=spec.n_hidden,
        n_outputs=spec.n_outputs,
    )
    w = _float32_weights(est)
    state = {
        "input_mean": w["input_mean"],
        "input_std": w["input_std"],
        "conv.weight": w["kernel"],
        "conv.bias": w["bias_conv"],
        "fc.weight": np.ascontiguousarray(w["W_fc"].T),  # (O, F*H'*W')
        "fc.bias": w["b_fc"],
    }
    module.load_state_dict({name: torch.from_numpy(a) for name, a in state.items()}, strict=True)
    return module


def to_onnx(est: Any, path: str | os.PathLike[str]) -> None:
    """Write the fitted ``est`` to ``path`` as an ONNX model (opset :data:`ONNX_OPSET`).

    Graph: ``Sub``, ``Div`` (standardisation), ``Conv``, ``Relu``, ``Flatten(axis=1)``, ``Gemm``.
    Input ``"x"``: float32 ``("batch", C, H, W)`` with a dynamic batch axis; output ``"logits"``
    (classifier, over ``est.classes_``, which are also stored as JSON in the model's metadata
    under ``"classes"``) or ``"outputs"`` (regressor): float32 ``("batch", O)``. The model is
    checked with ``onnx.checker`` (with shape inference) before it is written, atomically.
    """
    onnx = _import_onnx()
    _check_fitted(est, "est")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    from ._files import write_bytes

    model = _onnx_model(est, onnx)
    onnx.checker.check_model(model, full_check=True)
    write_bytes(path, model.SerializeToString())


def _onnx_model(est: Any, onnx: Any) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    from ._version import __version__

    spec = est.spec_
    k, s, p = spec.kernel_size, spec.stride, spec.pad
    output_name = "logits" if _is_classifier(est) else "outputs"
    w = _float32_weights(est)
    initializers = [numpy_helper.from_array(a, name=name) for name, a in w.items()]
    nodes = [
        helper.make_node("Sub", ["x", "input_mean"], ["centered"]),
        helper.make_node("Div", ["centered", "input_std"], ["standardized"]),
        helper.make_node(
            "Conv",
            ["standardized", "kernel", "bias_conv"],
            ["conv"],
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[p, p, p, p],  # (top, left, bottom, right)
            dilations=[1, 1],
            group=1,
        ),
        helper.make_node("Relu", ["conv"], ["hidden"]),
        helper.make_node("Flatten", ["hidden"], ["flat"], axis=1),  # C order of (F, H', W')
        helper.make_node("Gemm", ["flat", "W_fc", "b_fc"], [output_name]),  # flat @ W_fc + b_fc
    ]
    image = [spec.in_channels, spec.height, spec.width]
    graph = helper.make_graph(
        nodes,
        "tinycnn",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *image])],
        outputs=[
            helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", spec.n_outputs])
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
            f"tinycnn {type(est).__name__}: standardise -> conv -> ReLU -> flatten -> dense, "
            "on raw float32 images (batch, C, H, W)"
        ),
    )
    if _is_classifier(est):
        with contextlib.suppress(TypeError):  # classes that JSON cannot spell are left out
            classes = json.dumps(np.asarray(est.classes_).tolist())
            helper.set_model_props(model, {"classes": classes})
    return model


def from_torch(module: torch.nn.Module, like: Any) -> Any:
    """A NEW fitted estimator like ``like``, with the weights of ``module``.

    ``module`` is what :func:`to_torch` returns (possibly trained further), or a wrapper holding
    it in ``.module`` (``DistributedDataParallel``, ``DataParallel``) or ``._orig_mod``
    (``torch.compile``). The result is a clone of ``like`` (same class and parameters) with copies
    of ``like``'s public fitted attributes (``classes_``, ``spec_``, ``loss_curve_``...), except
    that ``params_`` are the module's conv and dense weights in ``like``'s dtype and
    ``input_mean_``/``input_std_`` are the module's standardisation buffers: it predicts what the
    module computes. It is what ``tinycnn.load`` would give for a model file of those weights: no
    private training state comes along (the optimizer's moments belong to the weights before
    PyTorch changed them), so a later ``partial_fit`` starts a fresh optimizer. ``like`` itself
    is not changed; ``loss_curve_`` and ``n_iter_`` stay ``like``'s, since the PyTorch training
    is not recorded there.

    Raises ``TypeError`` when ``module`` is not such a module, ``ValueError`` naming every layer
    whose shape or settings differ from ``like.spec_``, or whose weights are not finite.
    """
    torch = _import_torch()
    from ._torch_net import TinyCNNModule

    _check_fitted(like, "like")
    net = _unwrap(module, torch, TinyCNNModule)
    problems = _shape_problems(net, like.spec_, torch)
    if problems:
        raise ValueError(
            f"module does not match like's network ({_describe_spec(like.spec_)}): "
            + "; ".join(problems)
        )
    arrays = {
        name: tensor.detach().to(device="cpu", dtype=torch.float64).numpy()
        for name, tensor in net.state_dict().items()
    }
    not_finite = [name for name, a in arrays.items() if not np.isfinite(a).all()]
    if not_finite:
        raise ValueError(f"module's {', '.join(not_finite)} must be finite, but contain NaN/inf")
    if not (arrays["input_std"] > 0).all():
        raise ValueError(f"module's input_std must be > 0, got {arrays['input_std'].ravel()}")

    dtype = like.params_.kernel.dtype
    est = _fitted_clone(like)
    est.params_ = ConvNetParams(
        kernel=arrays["conv.weight"].astype(dtype),
        bias_conv=arrays["conv.bias"].astype(dtype),
        W_fc=np.ascontiguousarray(arrays["fc.weight"].T, dtype=dtype),
        b_fc=arrays["fc.bias"].astype(dtype),
    )
    est.input_mean_ = arrays["input_mean"].reshape(-1)
    est.input_std_ = arrays["input_std"].reshape(-1)
    return est


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


def _describe_spec(spec: Any) -> str:
    return (
        f"image {spec.in_channels}x{spec.height}x{spec.width}, {spec.n_filters} filters "
        f"{spec.kernel_size}x{spec.kernel_size}, stride {spec.stride}, pad {spec.pad}, "
        f"{spec.n_hidden} hidden, {spec.n_outputs} outputs"
    )


def _shape_problems(net: Any, spec: Any, torch: Any) -> list[str]:
    """Every way ``net``'s layers differ from ``spec``, as readable phrases (empty if none)."""
    nn = torch.nn
    problems: list[str] = []

    def expect(what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{what} is {got}, expected {want}")

    C, F, k, s, p = spec.in_channels, spec.n_filters, spec.kernel_size, spec.stride, spec.pad
    expect("image_shape", tuple(getattr(net, "image_shape", ())), (C, spec.height, spec.width))
    for name in ("input_mean", "input_std"):
        buffer = getattr(net, name, None)
        shape = tuple(buffer.shape) if isinstance(buffer, torch.Tensor) else None
        expect(f"{name} shape", shape, (1, C, 1, 1))

    conv = getattr(net, "conv", None)
    if not isinstance(conv, nn.Conv2d):
        problems.append(f"conv is a {type(conv).__name__}, expected a torch.nn.Conv2d")
    else:
        expect("conv.weight shape", tuple(conv.weight.shape), (F, C, k, k))
        expect("conv.bias shape", None if conv.bias is None else tuple(conv.bias.shape), (F,))
        expect("conv.stride", tuple(conv.stride), (s, s))
        expect("conv.padding", conv.padding, (p, p))
        expect("conv.dilation", tuple(conv.dilation), (1, 1))
        expect("conv.groups", conv.groups, 1)
        expect("conv.padding_mode", conv.padding_mode, "zeros")

    if not isinstance(getattr(net, "relu", None), nn.ReLU):
        problems.append(f"relu is a {type(getattr(net, 'relu', None)).__name__}, expected ReLU")
    flatten = getattr(net, "flatten", None)
    if not isinstance(flatten, nn.Flatten) or (flatten.start_dim, flatten.end_dim) != (1, -1):
        problems.append(f"flatten is {flatten!r}, expected Flatten(start_dim=1, end_dim=-1)")

    fc = getattr(net, "fc", None)
    if not isinstance(fc, nn.Linear):
        problems.append(f"fc is a {type(fc).__name__}, expected a torch.nn.Linear")
    else:
        expect("fc.weight shape", tuple(fc.weight.shape), (spec.n_outputs, spec.n_hidden))
        bias_shape = None if fc.bias is None else tuple(fc.bias.shape)
        expect("fc.bias shape", bias_shape, (spec.n_outputs,))
    return problems
