"""Export to PyTorch and ONNX and back: the same predictions, in every direction.

Oracle: tinycnn's own forward pass (``est.network_.forward`` on the standardised images) and the
fitted estimator's ``predict``. Float32 exports agree with a float64 estimator to float32 rounding:
``rtol=1e-5``, with an absolute floor of ``1e-5 * max|expected|`` so that entries that cancel to
near zero are judged on the outputs' scale. Fine-tuning is checked against ``torch.optim.SGD``.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import tinycnn  # noqa: E402
from tinycnn import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, export  # noqa: E402
from tinycnn.network import ConvNetParams  # noqa: E402

torch.set_num_threads(1)  # the suite runs on 2 cores with -n 2


pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def reference_outputs(est, X):
    """tinycnn's outputs ``(N, O)`` for raw images ``X`` ``(N, C, H, W)``, from the contract's
    fitted attributes: standardise in float64, then the network's forward in the estimator's
    dtype (logits for a classifier)."""
    dtype = est.params_[0].dtype
    mean = est.input_mean_.reshape(1, -1, 1, 1)
    std = est.input_std_.reshape(1, -1, 1, 1)
    return est.network_.forward(list(est.params_), ((X - mean) / std).astype(dtype))


def make_fitted(
    *,
    classifier=True,
    image_shape=(1, 6, 6),
    n_filters=3,
    kernel_size=3,
    stride=1,
    pad=1,
    n_outputs=4,
    dtype=np.float64,
    seed=0,
):
    """A CNNClassifier/CNNRegressor fitted briefly on random images whose channels have
    different means and scales (so the standardisation matters)."""
    rng = np.random.default_rng(seed)
    C, H, W = image_shape
    N = 24
    loc = rng.uniform(-1, 2, (1, C, 1, 1))
    scale = rng.uniform(0.3, 3, (1, C, 1, 1))
    X = loc + scale * rng.standard_normal((N, C, H, W))
    settings = dict(
        n_filters=n_filters,
        kernel_size=kernel_size,
        stride=stride,
        padding=pad,
        max_iter=3,
        learning_rate_init=0.01,
        dtype=dtype,
        random_state=seed,
    )
    if classifier:
        labels = (np.arange(n_outputs) * 3 + 1)[rng.permutation(N) % n_outputs]
        return tinycnn.CNNClassifier(**settings).fit(X, labels)
    y = rng.standard_normal((N, n_outputs)) if n_outputs > 1 else rng.standard_normal(N)
    return tinycnn.CNNRegressor(**settings).fit(X, y)


def images(est, n, seed=1):
    """Raw float32 images ``(n, C, H, W)`` around the model's input statistics."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.5, 1.0, (n, *est.network_.input_shape)).astype(np.float32)


def assert_close_rel(actual, expected, rtol=1e-5):
    expected = np.asarray(expected, dtype=np.float64)
    floor = rtol * float(np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol, floor)


def run_torch(module, X):
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy()


geometries = st.fixed_dictionaries(
    {
        "channels": st.integers(1, 3),
        "height": st.integers(3, 9),
        "width": st.integers(3, 9),
        "kernel_size": st.integers(1, 4),
        "stride": st.integers(1, 3),
        "pad": st.integers(0, 2),
        "n_filters": st.integers(1, 4),
        "n_outputs": st.integers(1, 3),
        "classifier": st.booleans(),
        "dtype": st.sampled_from([np.float64, np.float32]),
        "seed": st.integers(0, 2**16),
    }
).filter(lambda g: g["kernel_size"] <= min(g["height"], g["width"]) + 2 * g["pad"])


def fitted_from(g):
    return make_fitted(
        classifier=g["classifier"],
        image_shape=(g["channels"], g["height"], g["width"]),
        n_filters=g["n_filters"],
        kernel_size=g["kernel_size"],
        stride=g["stride"],
        pad=g["pad"],
        n_outputs=max(g["n_outputs"], 2) if g["classifier"] else g["n_outputs"],
        dtype=g["dtype"],
        seed=g["seed"],
    )


# --- to_torch ---------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geometries)
def test_to_torch_matches_tinycnn_for_any_geometry_and_dtype(g):
    est = fitted_from(g)
    X = images(est, 5, seed=g["seed"])
    module = export.to_torch(est)
    out = run_torch(module, X)
    assert out.dtype == np.float32
    assert_close_rel(out, reference_outputs(est, X))
    if g["classifier"]:
        np.testing.assert_array_equal(est.classes_[out.argmax(axis=1)], est.predict(X))
        probabilities = torch.softmax(torch.from_numpy(out).double(), dim=1).numpy()
        assert_close_rel(probabilities, est.predict_proba(X))
    else:
        assert_close_rel(out.reshape(est.predict(X).shape), est.predict(X))


def test_to_torch_is_float32_and_has_the_contract_layers():
    est = make_fitted(image_shape=(2, 7, 5), n_filters=4, kernel_size=3, stride=2, pad=1)
    module = export.to_torch(est)
    assert {p.dtype for p in module.parameters()} == {torch.float32}
    assert {b.dtype for b in module.buffers()} == {torch.float32}
    assert isinstance(module.conv, torch.nn.Conv2d)
    assert (module.conv.stride, module.conv.padding) == ((2, 2), (1, 1))
    assert isinstance(module.fc, torch.nn.Linear)
    W_fc = est.params_.W_fc.astype(np.float32)
    np.testing.assert_array_equal(module.fc.weight.detach().numpy(), W_fc.T)
    std = est.input_std_.astype(np.float32)
    np.testing.assert_array_equal(module.input_std.numpy(), std.reshape(1, 2, 1, 1))


def test_to_torch_in_float64_is_tinycnn_exactly():
    """Out of float32 rounding's way, the module is the same function, not a close one: in
    float64 it equals tinycnn's forward with the same (float32-rounded) weights to 1e-12."""
    est = make_fitted(image_shape=(3, 8, 7), n_filters=4, kernel_size=3, stride=2, pad=2)
    X = images(est, 6).astype(np.float64)
    module = export.to_torch(est).double()
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()

    def rounded(a):
        return np.asarray(a).astype(np.float32).astype(np.float64)

    same_weights = SimpleNamespace(
        network_=est.network_,
        params_=ConvNetParams(*(rounded(p) for p in est.params_)),
        input_mean_=rounded(est.input_mean_),
        input_std_=rounded(est.input_std_),
    )
    np.testing.assert_allclose(out, reference_outputs(same_weights, X), rtol=1e-12, atol=1e-12)


def test_to_torch_regressor_multi_output():
    est = make_fitted(classifier=False, n_outputs=3, stride=2, pad=0)
    X = images(est, 9)
    assert_close_rel(run_torch(export.to_torch(est), X), est.predict(X))


def test_to_torch_module_pickles(tmp_path):
    """torch.save(module) and multiprocessing spawn both pickle the module."""
    est = make_fitted()
    module = export.to_torch(est)
    torch.save(module, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    X = images(est, 3)
    np.testing.assert_array_equal(run_torch(loaded, X), run_torch(module, X))


def test_to_torch_module_says_what_input_it_takes():
    est = make_fitted(image_shape=(2, 7, 5))
    module = export.to_torch(est)
    for x in (torch.zeros(3, 70), torch.zeros(3, 1, 7, 5), np.zeros((3, 2, 7, 5))):
        with pytest.raises(ValueError, match=r"images as a torch.float32 tensor \(N, 2, 7, 5\)"):
            module(x)
    with pytest.raises(TypeError, match=r"torch.float32 tensor .* got torch.float64"):
        module(torch.zeros(3, 2, 7, 5, dtype=torch.float64))


def test_to_torch_refuses_an_unfitted_estimator():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match=r"est must be a fitted tinycnn estimator.*params_"):
        tinycnn.CNNClassifier().to_torch()
    with pytest.raises(ValueError, match=r"est must be a fitted tinycnn estimator.*params_"):
        export.to_torch(SimpleNamespace(spec_=None))


# --- to_onnx ----------------------------------------------------------------------------------


def onnx_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "geometry",
    [
        dict(image_shape=(1, 8, 8), kernel_size=3, stride=1, pad=1),
        dict(image_shape=(3, 9, 7), kernel_size=4, stride=2, pad=2),
        dict(image_shape=(2, 5, 6), kernel_size=2, stride=3, pad=0),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("classifier", [True, False])
def test_to_onnx_runs_in_onnxruntime_like_tinycnn(tmp_path, geometry, dtype, classifier):
    est = make_fitted(classifier=classifier, n_outputs=3, dtype=dtype, **geometry)
    path = tmp_path / "model.onnx"
    est.to_onnx(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    session = onnx_session(path)
    output_name = "logits" if classifier else "outputs"
    assert [o.name for o in session.get_outputs()] == [output_name]
    for batch in (1, 7):
        X = images(est, batch, seed=batch + 10)
        (out,) = session.run(None, {"x": X})
        assert out.shape == (batch, 3) and out.dtype == np.float32
        assert_close_rel(out, reference_outputs(est, X))
        if classifier:
            np.testing.assert_array_equal(est.classes_[out.argmax(axis=1)], est.predict(X))
        else:
            assert_close_rel(out, est.predict(X))


def test_to_onnx_input_is_x_with_a_dynamic_batch_axis(tmp_path):
    est = make_fitted(image_shape=(2, 7, 5), n_outputs=4)
    export.to_onnx(est, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    (graph_input,) = model.graph.input
    assert graph_input.name == "x"
    tensor_type = graph_input.type.tensor_type
    assert tensor_type.elem_type == onnx.TensorProto.FLOAT
    batch, *image = tensor_type.shape.dim
    assert batch.dim_param == "batch" and not batch.HasField("dim_value")
    assert [d.dim_value for d in image] == [2, 7, 5]
    (graph_output,) = model.graph.output
    assert graph_output.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [op.domain or "" for op in model.opset_import] == [""]
    assert model.opset_import[0].version == export.ONNX_OPSET
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Sub", "Div", "Conv", "Relu", "Flatten", "Gemm"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["classes"] == "[1, 4, 7, 10]"


def test_to_onnx_replaces_a_file_atomically(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old model")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        export.to_onnx(make_fitted(), path)
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left behind
    monkeypatch.undo()

    export.to_onnx(make_fitted(), path)
    onnx.checker.check_model(onnx.load(str(path)))
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_to_onnx_refuses_a_path_that_is_not_one(tmp_path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        export.to_onnx(make_fitted(), 3)


# --- from_torch -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("classifier", [True, False])
def test_round_trip_through_torch_keeps_torchs_predictions(dtype, classifier):
    like = make_fitted(
        classifier=classifier, image_shape=(2, 7, 6), stride=2, pad=1, n_outputs=3, dtype=dtype
    )
    before = ConvNetParams(*(p.copy() for p in like.params_))
    module = export.to_torch(like)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a stand-in for further training in PyTorch
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator)).abs_()
    est = export.from_torch(module, like=like)

    assert type(est) is type(like) and est is not like
    assert est.spec_ == like.spec_ and est.params_.kernel.dtype == dtype
    assert all(p.shape == q.shape for p, q in zip(est.params_, like.params_))
    X = images(like, 8)
    torch_out = run_torch(module, X)
    assert_close_rel(reference_outputs(est, X), torch_out)
    if classifier:
        np.testing.assert_array_equal(est.predict(X), like.classes_[torch_out.argmax(axis=1)])
        np.testing.assert_array_equal(est.classes_, like.classes_)
    else:
        assert_close_rel(est.predict(X), torch_out)
    # like is untouched
    for p, q in zip(like.params_, before):
        np.testing.assert_array_equal(p, q)
    assert not np.allclose(reference_outputs(est, X), reference_outputs(like, X), rtol=1e-3)


def test_from_torch_gives_what_loading_a_model_file_of_those_weights_gives(tmp_path):
    """The estimator that comes back is a complete fitted estimator: it saves and loads, and it
    carries no training state of the weights before PyTorch (a partial_fit after it starts a
    fresh optimizer, exactly as after tinycnn.load)."""
    like = make_fitted(image_shape=(2, 6, 5), n_outputs=3)
    module = like.to_torch()
    with torch.no_grad():
        module.fc.weight.mul_(1.5)
        module.conv.bias.add_(0.2)
    est = tinycnn.from_torch(module, like=like)
    assert tinycnn.from_torch is export.from_torch
    est.save(tmp_path / "back.npz")
    loaded = tinycnn.load(tmp_path / "back.npz")
    X = images(like, 10)
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))

    rng = np.random.default_rng(5)
    X_more = rng.standard_normal((12, 2, 6, 5))
    y_more = like.classes_[np.arange(12) % 3]
    est.partial_fit(X_more, y_more)
    loaded.partial_fit(X_more, y_more)
    for p, q in zip(est.params_, loaded.params_):
        np.testing.assert_array_equal(p, q)


def test_from_torch_of_an_unchanged_export_is_the_estimator_to_float32_rounding():
    like = make_fitted(dtype=np.float32)
    est = export.from_torch(export.to_torch(like), like=like)
    for p, q in zip(est.params_, like.params_):
        np.testing.assert_array_equal(p, q)  # float32 in, float32 out: exact
    np.testing.assert_allclose(est.input_mean_, like.input_mean_, rtol=1e-7)
    assert est.input_mean_.dtype == np.float64 and est.input_mean_.shape == (1,)


def test_from_torch_unwraps_a_module_held_in_dot_module():
    """DistributedDataParallel and DataParallel keep the trained module in ``.module``."""

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    like = make_fitted()
    module = export.to_torch(like)
    with torch.no_grad():
        module.fc.bias.add_(1.0)
    est = export.from_torch(Wrapper(module), like=like)
    np.testing.assert_allclose(est.params_.b_fc, like.params_.b_fc + 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "other, message",
    [
        (dict(n_outputs=5), r"its last layer fc \(Linear.*\) gives 5 outputs, like has 4"),
        (dict(image_shape=(2, 6, 6)), r"its input_mean has shape \(1, 2, 1, 1\), expected"),
        (dict(image_shape=(1, 9, 4)), r"its image_shape is \(1, 9, 4\), like's images are"),
    ],
)
def test_from_torch_refuses_a_module_for_other_images_or_outputs(other, message):
    like = make_fitted()
    module = export.to_torch(make_fitted(**other))
    header = r"module is not a tinycnn stack for like's 1x6x6 images and 4 outputs: "
    with pytest.raises(ValueError, match=header + ".*" + message):
        export.from_torch(module, like=like)


@pytest.mark.parametrize("other", [dict(n_filters=5), dict(pad=0), dict(stride=2)])
def test_from_torch_takes_another_one_conv_network_on_the_same_images(other):
    """The network comes from the module: a one-conv module of another geometry gives an
    estimator of that network (as ``layers``, the shorthand parameters cleared)."""
    like = make_fitted()
    donor = make_fitted(**other, seed=3)
    est = export.from_torch(export.to_torch(donor), like=like)
    assert est.network_ == donor.network_ and not hasattr(est, "spec_")
    assert est.layers == donor.network_.layers[:2]  # (Conv2d, ReLU): Flatten and Dense implied
    assert est.get_params()["n_filters"] is None and est.get_params()["padding"] is None
    assert isinstance(est.params_, list)
    X = images(like, 6)
    assert_close_rel(est.predict_proba(X), donor.predict_proba(X))


def test_from_torch_refuses_changed_layers():
    like = make_fitted()
    module = export.to_torch(like)
    module.relu = torch.nn.Sigmoid()
    module.conv = torch.nn.Conv2d(1, 3, 3, padding=1, bias=False, dilation=1, groups=1)
    with pytest.raises(ValueError, match=r"conv \(Conv2d.*\) needs a bias; relu is a Sigmoid"):
        export.from_torch(module, like=like)


def test_from_torch_refuses_other_modules_and_non_finite_weights():
    like = make_fitted()
    with pytest.raises(TypeError, match="module must be the torch.nn.Module .* got Sequential"):
        export.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2)), like=like)
    with pytest.raises(TypeError, match="got ndarray"):
        export.from_torch(np.zeros(3), like=like)
    module = export.to_torch(like)
    with torch.no_grad():
        module.conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"module's conv\.weight must be finite"):
        export.from_torch(module, like=like)
    with pytest.raises(ValueError, match="like must be a fitted tinycnn estimator"):
        export.from_torch(export.to_torch(like), like=SimpleNamespace())


# --- any stack --------------------------------------------------------------------------------

# Stacks (hidden, as the estimators take them) on their images. Pooling windows that overlap
# (stride < size) and that skip pixels (stride > size), with partial windows at the edges
# (floor mode drops them), a strided conv, a conv after pooling, dense layers after the flatten.
STACKS = {
    "lenet-max": ((1, 12, 12), "conv6k3p1-relu-max2-conv8k3-relu-max2-flatten-dense16-relu"),
    "strided-conv": ((2, 9, 7), "conv4k3s2p1-relu-conv3k2s2-relu"),
    "avg-stride-not-size": ((3, 13, 10), "conv4k3p1-relu-avg3s2-conv5k2-relu-avg2s3"),
    "max-stride-not-size": ((1, 14, 11), "conv4k3-relu-max3s2-relu-max2s3"),
    "flat-only": ((2, 4, 5), "flatten-dense8-relu"),
}


def make_stack(name, *, classifier=True, n_outputs=3, dtype=np.float64, seed=0, **settings):
    """An estimator of ``STACKS[name]`` fitted briefly (as :func:`make_fitted`)."""
    image_shape, layers = STACKS[name]
    rng = np.random.default_rng(seed)
    C, H, W = image_shape
    N = 24
    loc = rng.uniform(-1, 2, (1, C, 1, 1))
    scale = rng.uniform(0.3, 3, (1, C, 1, 1))
    X = loc + scale * rng.standard_normal((N, C, H, W))
    params = dict(
        layers=layers, max_iter=3, learning_rate_init=0.01, dtype=dtype, random_state=seed
    )
    params.update(settings)
    if classifier:
        labels = (np.arange(n_outputs) * 3 + 1)[rng.permutation(N) % n_outputs]
        return tinycnn.CNNClassifier(**params).fit(X, labels)
    return tinycnn.CNNRegressor(**params).fit(X, rng.standard_normal((N, n_outputs)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("classifier", [True, False])
@pytest.mark.parametrize("stack", sorted(STACKS))
def test_a_stack_exported_to_torch_and_onnx_predicts_what_tinycnn_predicts(
    tmp_path, stack, classifier, dtype
):
    est = make_stack(stack, classifier=classifier, dtype=dtype, seed=len(stack))
    module = export.to_torch(est)
    est.to_onnx(tmp_path / "m.onnx")
    session = onnx_session(tmp_path / "m.onnx")
    for batch in (1, 7):
        X = images(est, batch, seed=batch)
        expected = reference_outputs(est, X)
        torch_out = run_torch(module, X)
        (onnx_out,) = session.run(None, {"x": X})
        for out in (torch_out, onnx_out):
            assert out.shape == (batch, 3) and out.dtype == np.float32
            assert_close_rel(out, expected)
            if classifier:
                np.testing.assert_array_equal(est.classes_[out.argmax(axis=1)], est.predict(X))
            else:
                assert_close_rel(out, est.predict(X))


def draw_stack(data):
    """Random images ``(C, H, W)`` and a hidden stack that fits them: conv (any stride and
    padding), ReLU, max and average pooling (stride below, equal to or above the window), then
    maybe a Flatten and dense layers."""
    shape = (
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(3, 11)),
        data.draw(st.integers(3, 11)),
    )
    layers, (_, h, w) = [], shape
    for _ in range(data.draw(st.integers(0, 4))):
        kind = data.draw(st.sampled_from(["conv", "relu", "max", "avg"]))
        if kind == "relu":
            layers.append(ReLU())
            continue
        if kind == "conv":
            pad = data.draw(st.integers(0, 2))
            layer = Conv2d(
                data.draw(st.integers(1, 4)),
                data.draw(st.integers(1, min(h, w) + 2 * pad)),
                data.draw(st.integers(1, 3)),
                pad,
            )
        else:
            size = data.draw(st.integers(1, min(h, w, 3)))
            stride = data.draw(st.sampled_from([None, 1, 2, 3]))
            layer = (MaxPool2d if kind == "max" else AvgPool2d)(size, stride)
        _, h, w = layer.output_shape((1, h, w))
        layers.append(layer)
    if data.draw(st.booleans()):
        layers.append(Flatten())
        for _ in range(data.draw(st.integers(0, 2))):
            layers += [Dense(data.draw(st.integers(1, 6))), ReLU()]
    return shape, tuple(layers)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_random_stack_exported_predicts_what_tinycnn_predicts_and_comes_back(data):
    shape, layers = draw_stack(data)
    classifier = data.draw(st.booleans())
    rng = np.random.default_rng(0)
    X = rng.normal(0.5, 2.0, (12, *shape))
    Estimator = tinycnn.CNNClassifier if classifier else tinycnn.CNNRegressor
    y = np.arange(12) % 3 if classifier else rng.standard_normal((12, 2))
    est = Estimator(layers=layers, max_iter=1, random_state=0).fit(X, y)
    module = export.to_torch(est)
    model = export._onnx_model(est, onnx)
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    X32 = X[:5].astype(np.float32)
    expected = reference_outputs(est, X32)
    assert_close_rel(run_torch(module, X32), expected)
    assert_close_rel(session.run(None, {"x": X32})[0], expected)
    back = export.from_torch(module, like=est)
    assert back.network_ == est.network_ and back.layers == est.layers
    for p, q in zip(back.params_, est.params_):
        np.testing.assert_array_equal(p, q.astype(np.float32))


def test_to_torch_of_a_stack_is_its_layers_in_order():
    est = make_stack("lenet-max")
    module = export.to_torch(est)
    nn = torch.nn
    assert [(name, type(child)) for name, child in module.named_children()] == [
        ("conv1", nn.Conv2d), ("relu1", nn.ReLU), ("maxpool1", nn.MaxPool2d),
        ("conv2", nn.Conv2d), ("relu2", nn.ReLU), ("maxpool2", nn.MaxPool2d),
        ("flatten", nn.Flatten), ("fc1", nn.Linear), ("relu3", nn.ReLU), ("fc2", nn.Linear),
    ]  # fmt: skip
    assert (module.conv1.padding, module.conv2.padding) == ((1, 1), (0, 0))
    assert (module.maxpool1.kernel_size, module.maxpool1.stride) == (2, 2)
    assert not module.maxpool1.ceil_mode
    assert {p.dtype for p in module.parameters()} == {torch.float32}
    _, _, kernel, _, W1, b1, W2, _ = est.params_
    np.testing.assert_array_equal(module.conv2.weight.detach().numpy(), kernel.astype(np.float32))
    np.testing.assert_array_equal(module.fc1.weight.detach().numpy(), W1.T.astype(np.float32))
    np.testing.assert_array_equal(module.fc1.bias.detach().numpy(), b1.astype(np.float32))
    np.testing.assert_array_equal(module.fc2.weight.detach().numpy(), W2.T.astype(np.float32))
    assert module.input_mean.shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"images as a torch.float32 tensor \(N, 1, 12, 12\)"):
        module(torch.zeros(2, 144))


def test_to_onnx_of_a_stack_writes_one_node_per_layer_with_its_pooling(tmp_path):
    est = make_stack("avg-stride-not-size", classifier=False)
    export.to_onnx(est, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Sub", "Div", "Conv", "Relu", "AveragePool", "Conv", "Relu", "AveragePool",
                   "Flatten", "Gemm"]  # fmt: skip
    pools = [node for node in model.graph.node if node.op_type == "AveragePool"]
    attributes = [{a.name: onnx.helper.get_attribute_value(a) for a in p.attribute} for p in pools]
    assert [(a["kernel_shape"], a["strides"]) for a in attributes] == [([3, 3], [2, 2]),
                                                                      ([2, 2], [3, 3])]  # fmt: skip
    assert all(a["ceil_mode"] == 0 and a["pads"] == [0, 0, 0, 0] for a in attributes)
    (graph_input,) = model.graph.input
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    names = {init.name for init in model.graph.initializer}
    assert names == {"input_mean", "input_std", "conv1.weight", "conv1.bias", "conv2.weight",
                     "conv2.bias", "fc.weight", "fc.bias"}  # fmt: skip
    assert set(export.to_torch(est).state_dict()) == names  # the same arrays by the same names


def test_to_onnx_pooling_is_floor_mode_where_ceil_mode_would_differ(tmp_path):
    """max3s2 on 12 rows leaves a partial window (ceil mode would keep it): the ONNX model's
    outputs still have tinycnn's shapes and values, at every pooling layer."""
    est = make_stack("max-stride-not-size")
    export.to_onnx(est, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim[1:]]
        for v in inferred.graph.value_info
    }
    assert est.network_.shapes[3] == (4, 5, 4) and est.network_.shapes[5] == (4, 2, 1)
    assert shapes["maxpool1"] == [4, 5, 4] and shapes["maxpool2"] == [4, 2, 1]


def test_from_torch_of_an_exported_stack_round_trips_it_exactly():
    like = make_stack("lenet-max", dtype=np.float32)
    est = export.from_torch(export.to_torch(like), like=like)
    assert est is not like and est.layers == like.layers and est.network_ == like.network_
    assert isinstance(est.params_, list) and not hasattr(est, "spec_")
    assert len(est.params_) == len(like.params_)
    for p, q in zip(est.params_, like.params_):
        assert p.dtype == np.float32 and p.flags.c_contiguous
        np.testing.assert_array_equal(p, q)
    # the standardisation is float64 in tinycnn, float32 in the module
    np.testing.assert_allclose(est.input_std_, like.input_std_, rtol=1e-7)
    X = images(like, 5)
    assert_close_rel(est.predict_proba(X), like.predict_proba(X), rtol=1e-6)


def test_from_torch_keeps_likes_spelling_of_the_same_layers():
    """PyTorch cannot tell MaxPool2d(2, stride=2) from MaxPool2d(2): like's own form is kept."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 1, 6, 6)), np.arange(10) % 2
    layers = (Conv2d(2, 3, pad=1), ReLU(), MaxPool2d(2, 2), AvgPool2d(1, 1))
    like = tinycnn.CNNClassifier(layers=layers, max_iter=1, random_state=0).fit(X, y)
    est = export.from_torch(export.to_torch(like), like=like)
    assert est.layers == layers and est.network_ == like.network_
    shorthand = tinycnn.CNNClassifier(n_filters=1, max_iter=1, random_state=0).fit(X, y)
    other = export.from_torch(export.to_torch(like), like=shorthand)
    assert other.layers == (Conv2d(2, 3, pad=1), ReLU(), MaxPool2d(2), AvgPool2d(1))


def test_from_torch_of_a_float64_module_keeps_its_float64_weights_exactly():
    like = make_stack("avg-stride-not-size", classifier=False, n_outputs=2)
    module = export.to_torch(like).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # float64 values that float32 cannot hold: PyTorch training in float64
        for tensor in module.parameters():
            tensor.add_(1e-3 * torch.randn(tensor.shape, generator=generator, dtype=torch.float64))
    est = export.from_torch(module, like=like)
    assert est.network_ == like.network_
    wanted = [t.detach().numpy() for t in module.parameters()]
    wanted = [w.T if w.ndim == 2 else w for w in wanted]  # Linear.weight is W.T
    assert [p.dtype for p in est.params_] == [np.dtype(np.float64)] * len(wanted)
    for p, w in zip(est.params_, wanted):
        np.testing.assert_array_equal(p, w)
    X = images(like, 6).astype(np.float64)
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(est.predict(X), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "donor, layers",
    [
        ("lenet-max", (Conv2d(6, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(8, 3), ReLU(),
                       MaxPool2d(2), Flatten(), Dense(16), ReLU())),
        ("max-stride-not-size", (Conv2d(4, 3), ReLU(), MaxPool2d(3, 2), ReLU(), MaxPool2d(2, 3))),
    ],
)  # fmt: skip
@pytest.mark.parametrize("like_kind", ["shorthand", "string", "tuple"])
def test_from_torch_gives_the_modules_stack_as_layers(donor, layers, like_kind):
    """``layers`` is the hidden stack: no output Dense, and no last Flatten (the estimator puts
    one before its output Dense itself); a string when like's was one."""
    image_shape, _ = STACKS[donor]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((12, *image_shape))
    y = np.arange(12) % 3
    settings = {"shorthand": dict(n_filters=2), "string": dict(layers="flatten-dense4-relu"),
                "tuple": dict(layers=(Flatten(), Dense(4), ReLU()))}[like_kind]  # fmt: skip
    like = tinycnn.CNNClassifier(**settings, max_iter=1, random_state=0).fit(X, y)
    donor_est = make_stack(donor)  # another stack on the same images, 3 classes
    est = export.from_torch(export.to_torch(donor_est), like=like)
    assert est.network_ == donor_est.network_
    if like_kind == "string":
        assert est.layers == tinycnn.layer_string.layers_to_string(layers)
    else:
        assert est.layers == layers
    shorthand = ("n_filters", "kernel_size", "stride", "padding")
    assert all(est.get_params()[name] is None for name in shorthand)
    assert not hasattr(est, "spec_") and est.max_iter == 1
    np.testing.assert_array_equal(est.classes_, like.classes_)  # y's labels stay like's
    assert_close_rel(est.predict_proba(X), donor_est.predict_proba(X))


def test_from_torch_takes_layers_replaced_in_pytorch():
    """A module whose head was replaced and trained in PyTorch comes back as that network."""
    like = make_stack("lenet-max")
    module = export.to_torch(like)
    module.fc1 = torch.nn.Linear(32, 24)
    module.fc2 = torch.nn.Linear(24, 3)
    est = export.from_torch(module, like=like)
    assert est.layers == like.layers.replace("dense16", "dense24")  # like's layers: a string
    X = images(like, 5)
    assert_close_rel(reference_outputs(est, X), run_torch(module, X))


def _bad(module):
    """Ways of breaking a module exported from ``make_stack("lenet-max")``, by name."""
    nn = torch.nn
    return {
        "sigmoid": ("relu1", nn.Sigmoid(), r"relu1 is a Sigmoid, not one of the layers tinycnn"),
        "dropout": ("drop", nn.Dropout(), r"drop is a Dropout, not one of the layers tinycnn"),
        "subclass": ("relu2", type("MyReLU", (nn.ReLU,), {})(), r"relu2 is a MyReLU, not one"),
        "dilation": ("conv1", nn.Conv2d(1, 6, 3, padding=2, dilation=2), r"conv1 .* dilation 1"),
        "groups": ("conv2", nn.Conv2d(6, 8, 3, groups=2), r"conv2 .* needs groups=1"),
        "rectangle": ("conv1", nn.Conv2d(1, 6, (3, 1), padding=1), r"conv1 .* a square kernel"),
        "reflect": ("conv1", nn.Conv2d(1, 6, 3, padding=1, padding_mode="reflect"),
                    r"conv1 .* needs padding_mode='zeros'"),
        "even-same": ("conv1", nn.Conv2d(1, 6, 2, padding="same"),
                      r"conv1 .* needs equal padding on every side"),
        "ceil": ("maxpool1", nn.MaxPool2d(2, ceil_mode=True), r"maxpool1 .* ceil_mode=False"),
        "pool-pad": ("maxpool2", nn.MaxPool2d(2, padding=1), r"maxpool2 .* needs padding 0"),
        "avg-divisor": ("maxpool2", nn.AvgPool2d(2, divisor_override=3),
                        r"maxpool2 .* divisor_override=None"),
        "flatten-dim": ("flatten", nn.Flatten(2), r"flatten .* start_dim=1 and end_dim=-1"),
        "no-bias": ("fc1", nn.Linear(32, 16, bias=False), r"fc1 .* needs a bias"),
        "too-large": ("conv2", nn.Conv2d(6, 8, 7),
                      r"conv2 \(Conv2d.*\) does not fit: .*kernel_size 7 is larger"),
        "channels": ("conv2", nn.Conv2d(5, 8, 3),
                     r"conv2 .* wrong number of input channels: it gets images 6x6x6"),
        "features": ("fc1", nn.Linear(30, 16),
                     r"fc1 .* wrong number of input features: it gets 32 features"),
        "last-relu": ("out", nn.ReLU(), r"its last layer out is ReLU\(\), not the output"),
        "outputs": ("fc2", nn.Linear(16, 5), r"its last layer fc2 .* gives 5 outputs, like has 3"),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_bad(None)))
def test_from_torch_refuses_a_module_tinycnn_cannot_run_naming_the_layer(case):
    like = make_stack("lenet-max")
    module = export.to_torch(like)
    name, layer, message = _bad(module)[case]
    setattr(module, name, layer)
    header = r"module is not a tinycnn stack for like's 1x12x12 images and 3 outputs: .*"
    with pytest.raises(ValueError, match=header + message):
        export.from_torch(module, like=like)


def test_from_torch_refuses_a_bias_of_the_wrong_shape():
    like = make_stack("lenet-max")
    module = export.to_torch(like)
    module.fc1.bias = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"fc1\.bias has shape \(3,\), expected \(16,\)"):
        export.from_torch(module, like=like)


def test_from_torch_refuses_a_module_without_layers():
    like = make_stack("lenet-max")
    module = export.to_torch(like)
    for name, _ in list(module.named_children()):
        delattr(module, name)
    with pytest.raises(ValueError, match="it has no layers"):
        export.from_torch(module, like=like)


# --- fine-tuning after from_torch: one tinycnn step is one torch.optim.SGD step -------------

FINE_TUNE = dict(
    solver="sgd",
    momentum=0.0,
    alpha=0.0,
    standardize=False,
    shuffle=False,
    early_stopping=False,
    max_iter=1,
    learning_rate_init=0.05,
)


def _fine_tune_case():
    """A float64 regressor stack, its module moved away from it (as PyTorch training would),
    the estimator from_torch gives, data ``X`` ``(N, 1, 12, 12)``, ``Y`` ``(N, 2)``."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((20, 1, 12, 12))
    Y = rng.standard_normal((20, 2))
    layers = "conv4k3p1-relu-max2-conv6k3-relu-avg2s1-flatten-dense8-relu"
    like = tinycnn.CNNRegressor(layers=layers, batch_size=20, random_state=0, **FINE_TUNE)
    like.fit(X, Y)
    module = export.to_torch(like).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator, dtype=torch.float64))
    return export.from_torch(module, like=like), module, X, Y


def _one_torch_sgd_step(module, X, Y):
    optimizer = torch.optim.SGD(module.parameters(), lr=FINE_TUNE["learning_rate_init"])
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(module(torch.from_numpy(X)), torch.from_numpy(Y))
    loss.backward()  # the mean over all N * 2 entries, as the regressor's loss
    optimizer.step()
    arrays = [t.detach().numpy() for t in module.parameters()]
    return [a.T if a.ndim == 2 else a for a in arrays]  # Linear.weight is W.T


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_fine_tuning_after_from_torch_is_one_torch_sgd_step(how):
    est, module, X, Y = _fine_tune_case()
    before = [p.copy() for p in est.params_]
    if how == "warm_start":
        est.set_params(warm_start=True).fit(X, Y)
        assert est.n_iter_ == 1
    else:
        est.partial_fit(X, Y)
    wanted = _one_torch_sgd_step(module, X, Y)
    assert len(est.params_) == len(wanted) == 8
    for p, w, b in zip(est.params_, wanted, before):
        assert not np.array_equal(w, b)  # every parameter moved
        np.testing.assert_allclose(p, w, rtol=1e-12, atol=1e-14)


# --- optional extras --------------------------------------------------------------------------


def test_a_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    est = make_fitted()
    with pytest.raises(ImportError, match=r"pip install 'tinycnn\[torch\]'"):
        export.to_torch(est)
    with pytest.raises(ImportError, match=r"pip install 'tinycnn\[torch\]'"):
        export.from_torch(object(), like=est)


def test_a_missing_onnx_names_the_extra(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ImportError, match=r"pip install 'tinycnn\[onnx\]'"):
        export.to_onnx(make_fitted(), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_importing_tinycnn_export_imports_neither_torch_nor_onnx():
    code = (
        "import sys, tinycnn, tinycnn.export; "
        "loaded = sorted({'torch', 'onnx', 'onnxruntime'} & set(sys.modules)); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
