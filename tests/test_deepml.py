"""The deep-ml #130 published example, exact to its printed digits."""

import numpy as np

from tinycnn.deepml import train_simple_cnn_with_backprop

PUBLISHED = (
    "(array([[[ 0.00501739],        [-0.00128214],        [ 0.00662764]],       "
    "[[ 0.01543131],        [-0.00209028],        [-0.00203986]],       "
    "[[ 0.01614389],        [ 0.00807636],        [-0.00424248]]]), array([5.02517066e-05]), "
    "array([[ 0.00635715, -0.00556573]]), array([ 0.00499531, -0.00499531]))"
)


def test_deepml_published_example_prints_exactly():
    np.random.seed(42)
    result = train_simple_cnn_with_backprop(
        np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]), np.array([[1, 0]]), 1, 0.01, 3, 1
    )
    assert str(result).replace("\n", "") == PUBLISHED
