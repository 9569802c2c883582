"""A checkpoint's training state (:class:`tinycnn.training.TrainingState`) as config and
members, and back.

The config's ``state`` object holds ``epoch``, ``seed``, ``finished``, ``rng_state`` (the
shuffling generator's ``bit_generator.state``, or null), ``history`` (the
:class:`~tinycnn.training.History` fields), ``optimizer`` (``scalars``: the optimizer's
``state_dict`` entries that are numbers; ``arrays``: each per-parameter array's key, ``m_<i>``,
``v_<i>`` (Adam) or ``velocity_<i>`` (SGD), ``i`` its index in the network's parameter list,
mapped to its member ``state.optimizer.<key>``) and ``best_params`` (null, or the members
``state.best.<suffix>`` of the best weights, named like the weights' ``params.<suffix>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..training import History, TrainingState
from ._json import is_float_list, is_int, is_number, json_scalar, plain_json

STATE_KEYS = {"epoch", "seed", "finished", "rng_state", "history", "optimizer", "best_params"}
HISTORY_KEYS = {
    "epochs_run",
    "loss_curve",
    "validation_scores",
    "best_loss",
    "best_validation_score",
    "no_improvement_count",
    "stopped_early",
}
# The optimizer's per-parameter arrays, by solver: keys "<prefix>_<parameter index>".
ARRAY_PREFIXES = {"adam": ("m", "v"), "sgd": ("velocity",)}


def state_content(
    state: TrainingState, suffixes: Sequence[str], dtype: np.dtype
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config["state"], members)`` of ``state``; ``suffixes`` name the network's parameter
    arrays (as after ``params.``), ``dtype`` is the weights'."""
    members: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    arrays: dict[str, str] = {}
    for key, value in state.optimizer.items():
        if isinstance(value, np.ndarray):
            member = f"state.optimizer.{key}"
            members[member] = np.ascontiguousarray(value)
            arrays[key] = member
        else:
            scalars[key] = json_scalar(value, f"state.optimizer[{key!r}]")
    best = None
    if state.best_params is not None:
        best = []
        for suffix, value in zip(suffixes, state.best_params):
            member = f"state.best.{suffix}"
            members[member] = np.ascontiguousarray(value, dtype=dtype)
            best.append(member)
    config = {
        "epoch": int(state.epoch),
        "seed": int(state.seed),
        "finished": bool(state.finished),
        "rng_state": plain_json(state.rng_state, "rng_state"),
        "history": history_config(state.history),
        "optimizer": {"scalars": scalars, "arrays": arrays},
        "best_params": best,
    }
    return config, members


def history_config(history: History) -> dict[str, Any]:
    return {
        "epochs_run": int(history.epochs_run),
        "loss_curve": [float(v) for v in history.loss_curve],
        "validation_scores": [float(v) for v in history.validation_scores],
        "best_loss": float(history.best_loss),
        "best_validation_score": float(history.best_validation_score),
        "no_improvement_count": int(history.no_improvement_count),
        "stopped_early": bool(history.stopped_early),
    }


def read_state(
    reader: Any, state: Any, est: Any, network: Any, suffixes: Sequence[str], dtype: np.dtype
) -> TrainingState:
    """The :class:`TrainingState` of a checkpoint's ``state`` object, checked against the fitted
    ``est`` and its ``network``; ``reader`` is the :class:`~.reading.ModelReader` (its
    ``fail``, ``member`` and ``weights``)."""
    from ..estimators._network import copy_params
    from ..optim import make_optimizer

    fail = reader.fail
    if not isinstance(state, dict):
        raise fail("a checkpoint needs a 'state' object in its config")
    if set(state) != STATE_KEYS:
        raise fail(f"state keys are {sorted(state)}, expected {sorted(STATE_KEYS)}")
    if not is_int(state["epoch"]) or state["epoch"] < 0:
        raise fail(f"state.epoch = {state['epoch']!r} is not a count")
    if not is_int(state["seed"]) or state["seed"] < 0:
        raise fail(f"state.seed = {state['seed']!r} is not a seed")
    if not isinstance(state["finished"], bool):
        raise fail("state.finished is not a boolean")
    history = read_history(fail, state["history"])
    if history.epochs_run != state["epoch"] or history.epochs_run != est.n_iter_:
        raise fail("state.epoch, state.history and fitted.n_iter disagree")

    rng_state = state["rng_state"]
    if rng_state is not None:
        try:  # the generator itself checks the state's form
            np.random.default_rng(0).bit_generator.state = rng_state
        except (TypeError, ValueError, KeyError) as exc:
            raise fail(f"state.rng_state is not a generator state ({exc})") from None

    shapes = network.stack.param_shapes
    optimizer_state = read_optimizer(reader, state["optimizer"], est.solver, shapes, dtype)
    try:
        optimizer = make_optimizer(est.solver, est.learning_rate_init, est.momentum)
        optimizer.load_state_dict(optimizer_state)
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"state.optimizer does not fit {est.solver} ({exc})") from None

    best = state["best_params"]
    if best is not None:
        if best != [f"state.best.{suffix}" for suffix in suffixes]:
            raise fail(f"state.best_params lists {best!r}")
        best = network.wrap(reader.weights("state.best", suffixes, shapes, dtype))
    return TrainingState(
        epoch=int(state["epoch"]),
        seed=int(state["seed"]),
        params=copy_params(est.params_),
        optimizer=optimizer_state,
        rng_state=rng_state,
        history=history,
        input_mean=est.input_mean_.copy(),
        input_std=est.input_std_.copy(),
        best_params=best,
        finished=state["finished"],
    )


def read_optimizer(
    reader: Any, value: Any, solver: str, shapes: Sequence[tuple[int, ...]], dtype: np.dtype
) -> dict[str, Any]:
    """The optimizer's ``state_dict`` from ``state.optimizer``: its arrays are none (no step
    taken yet) or every one the solver keeps, each shaped like its parameter."""
    fail = reader.fail
    if not isinstance(value, dict) or set(value) != {"scalars", "arrays"}:
        raise fail("state.optimizer is not {scalars, arrays}")
    scalars, members = value["scalars"], value["arrays"]
    if not isinstance(scalars, dict) or not isinstance(members, dict):
        raise fail("state.optimizer scalars/arrays are not objects")
    out: dict[str, Any] = dict(scalars)
    for key, member in members.items():
        prefix, _, index = key.rpartition("_")
        if (
            prefix not in ("m", "v", "velocity")
            or not index.isdigit()
            or int(index) >= len(shapes)
            or member != f"state.optimizer.{key}"
            or member not in reader.arrays
        ):
            raise fail(f"state.optimizer array {key!r} -> {member!r} is not valid")
        array = reader.member(member)
        if array.shape != tuple(shapes[int(index)]) or array.dtype != dtype:
            raise fail(f"{member} has shape {array.shape}; expected {shapes[int(index)]}")
        out[key] = array
    # A partial set would leave some parameters without their moments (zip stops early).
    complete = {f"{p}_{i}" for p in ARRAY_PREFIXES.get(solver, ()) for i in range(len(shapes))}
    if members and set(members) != complete:
        raise fail(
            f"state.optimizer arrays are {sorted(members)}; {solver} keeps {sorted(complete)}"
        )
    return out


def read_history(fail: Any, value: Any) -> History:
    if not isinstance(value, dict) or set(value) != HISTORY_KEYS:
        raise fail("state.history is not a training history")
    ok = (
        is_int(value["epochs_run"])
        and value["epochs_run"] >= 0
        and is_float_list(value["loss_curve"])
        and len(value["loss_curve"]) == value["epochs_run"]
        and is_float_list(value["validation_scores"])
        and is_number(value["best_loss"])
        and is_number(value["best_validation_score"])
        and is_int(value["no_improvement_count"])
        and value["no_improvement_count"] >= 0
        and isinstance(value["stopped_early"], bool)
    )
    if not ok:
        raise fail("state.history has values of the wrong kind")
    return History(
        epochs_run=value["epochs_run"],
        loss_curve=[float(v) for v in value["loss_curve"]],
        validation_scores=[float(v) for v in value["validation_scores"]],
        best_loss=float(value["best_loss"]),
        best_validation_score=float(value["best_validation_score"]),
        no_improvement_count=value["no_improvement_count"],
        stopped_early=value["stopped_early"],
    )
