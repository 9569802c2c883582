"""The string form of a stack (``tinycnn.layer_string``): every stack round-trips, and every bad
string is refused naming the token and its position."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.layer_string import layers_to_string, parse_layers
from tinycnn.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU

LENET = "conv6k5p2-relu-max2-conv16k5-relu-max2-flatten-dense120-relu-dense84-relu"

sizes = st.integers(1, 300)
layer = st.one_of(
    st.builds(Conv2d, sizes, sizes, st.integers(1, 9), st.integers(0, 9)),
    st.just(ReLU()),
    st.builds(MaxPool2d, sizes, st.none() | sizes),
    st.builds(AvgPool2d, sizes, st.none() | sizes),
    st.just(Flatten()),
    st.builds(Dense, sizes),
)


def test_lenet_reads_as_its_layers():
    assert parse_layers(LENET) == (
        Conv2d(6, 5, pad=2), ReLU(), MaxPool2d(2),
        Conv2d(16, 5), ReLU(), MaxPool2d(2),
        Flatten(), Dense(120), ReLU(), Dense(84), ReLU(),
    )  # fmt: skip


def test_strides_case_and_spaces():
    assert parse_layers(" CONV32k3s2p1 - Max3S2 -avg2s1") == (
        Conv2d(32, 3, stride=2, pad=1),
        MaxPool2d(3, stride=2),
        AvgPool2d(2, stride=1),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(layer, min_size=1, max_size=8))
def test_every_stack_round_trips(layers):
    text = layers_to_string(layers)
    assert parse_layers(text) == tuple(layers)
    assert layers_to_string(parse_layers(text)) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"layers is empty"),
        ("conv6k5--relu", r"token 2 of .* \(at character 8\) is empty"),
        ("conv6k5-relu-mx2", r"token 3 .*\(at character 13\), 'mx2', is not a layer"),
        ("conv6x5", r"token 1 .*'conv6x5', is not conv<filters>k<kernel size>"),
        ("conv6k5p", r"token 1 .*is not conv<filters>"),
        ("relu-dense", r"token 2 .*'dense', is not dense<units>"),
        ("relu-relu2", r"token 2 .*'relu2', is not relu"),
        ("max2-conv0k3", r"token 2 .*'conv0k3': Conv2d filters must be .*>= 1"),
        ("max0", r"token 1 .*'max0': MaxPool2d size"),
        ("dense-1", r"token 1 .*'dense', is not dense<units>"),
    ],
)
def test_a_bad_string_names_the_token_and_its_position(text, message):
    with pytest.raises(ValueError, match=message):
        parse_layers(text)


def test_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="layers must be a string"):
        parse_layers(["relu"])
