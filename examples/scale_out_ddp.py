"""Outgrow one process: fit in tinycnn, continue with PyTorch DistributedDataParallel, come back.

    python examples/scale_out_ddp.py

1. fit a ``tinycnn.CNNClassifier`` with a LeNet-like stack (two conv -> ReLU -> max-pool blocks,
   then a hidden dense layer: LeNet-5's pattern at the scale of 8x8 images) on scikit-learn's
   digits, deliberately briefly;
2. export it with ``est.to_torch()`` (the standardisation, then one PyTorch layer per tinycnn
   layer) and continue training it with ``DistributedDataParallel`` in 2 processes on this
   machine (gloo backend, loopback only, a bounded number of epochs, each process training on
   its own half of every epoch through a ``DistributedSampler``);
3. bring the stack back with ``tinycnn.from_torch(module, like=est)`` and compare the held-out
   accuracy before and after.

Needs ``pip install 'tinycnn[torch,sklearn]'``. Exits non-zero if anything fails, including the
accuracy getting worse. The same steps scale to many machines: change the address, the port and the
world size, and start one process per machine instead of spawning them here.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import warnings

import numpy as np

import tinycnn
from tinycnn import Conv2d, Dense, Flatten, MaxPool2d, ReLU

# LeNet-5's pattern for 8x8 digits: (1, 8, 8) -> (6, 4, 4) -> (16, 2, 2) -> 64 -> 64 -> 10 classes
# (the estimator appends the output Dense).
LAYERS = (
    Conv2d(6, 3, pad=1), ReLU(), MaxPool2d(2),
    Conv2d(16, 3, pad=1), ReLU(), MaxPool2d(2),
    Flatten(), Dense(64), ReLU(),
)  # fmt: skip
WORLD_SIZE = 2
TINYCNN_EPOCHS = 4  # deliberately short, so there is something left for PyTorch to do
DDP_EPOCHS = 8
BATCH_SIZE = 32  # per process: DDP averages the gradients, so one step sees 2 * 32 images
LEARNING_RATE = 1e-3
SEED = 0


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 now: bind to port 0 and let the kernel choose."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback_interface() -> str | None:
    """The loopback interface's name ("lo" on Linux, "lo0" on macOS), if there is one."""
    names = {name for _, name in socket.if_nameindex()}
    return next((name for name in ("lo", "lo0") if name in names), None)


def train_worker(
    rank: int,
    est: tinycnn.CNNClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    port: int,
    out_path: str,
) -> None:
    """One DDP process: train ``est.to_torch()`` on its share of ``images`` ``(N, C, H, W)``
    float32 with ``labels`` ``(N,)`` class indices; rank 0 saves the weights to ``out_path``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)  # one core per process
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(SEED)
        # Each process exports its own module, as each machine would from a model file. (Passing
        # one module to both would share its tensors' memory between the processes.) DDP starts
        # both from rank 0's weights anyway.
        model = DistributedDataParallel(est.to_torch())  # CPU: no device_ids
        dataset = TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
        sampler = DistributedSampler(
            dataset, num_replicas=WORLD_SIZE, rank=rank, shuffle=True, seed=SEED
        )
        loader = DataLoader(dataset, batch_size=BATCH_SIZE, sampler=sampler)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        loss_fn = torch.nn.CrossEntropyLoss()  # the model returns logits
        for epoch in range(DDP_EPOCHS):
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on both processes
            total = torch.zeros(2, dtype=torch.float64)  # (sum of losses, number of images)
            for batch_images, batch_labels in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(batch_images), batch_labels)
                loss.backward()  # DDP all-reduces (averages) the gradients here
                optimizer.step()
                total += torch.tensor([loss.item() * len(batch_labels), len(batch_labels)])
            dist.all_reduce(total)  # both processes' halves of the epoch
            if rank == 0:
                print(f"  DDP epoch {epoch + 1}/{DDP_EPOCHS}: loss {total[0] / total[1]:.4f}")
        if rank == 0:
            torch.save(model.module.state_dict(), out_path)
    finally:
        dist.destroy_process_group()


def continue_training_ddp(est: tinycnn.CNNClassifier, images: np.ndarray, labels: np.ndarray):
    """``est.to_torch()`` trained with DDP in ``WORLD_SIZE`` spawned processes."""
    import torch
    import torch.multiprocessing as mp

    # Loopback only: the rendezvous is on 127.0.0.1, and gloo's own connections are bound to the
    # loopback interface rather than to whatever the hostname resolves to.
    interface = loopback_interface()
    if interface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "ddp_state.pt")
        mp.spawn(
            train_worker,
            args=(est, images, labels, free_loopback_port(), out_path),
            nprocs=WORLD_SIZE,
            join=True,  # raises if a process fails
        )
        module = est.to_torch()
        module.load_state_dict(torch.load(out_path, weights_only=True))
    return module


def main() -> int:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data / 16, digits.target, test_size=0.25, stratify=digits.target, random_state=0
    )
    est = tinycnn.CNNClassifier(
        layers=LAYERS, image_shape=(1, 8, 8), max_iter=TINYCNN_EPOCHS, random_state=SEED
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopping early is the point here
        est.fit(X_train, y_train)
    before = est.score(X_test, y_test)

    # est.to_torch() takes raw (N, 1, 8, 8) float32 images and returns logits over est.classes_.
    images = X_train.reshape(-1, 1, 8, 8).astype(np.float32)
    labels = np.searchsorted(est.classes_, y_train)  # the logits' column of each label
    print(f"tinycnn stack: {tinycnn.layer_string.layers_to_string(est.network_.layers)}")
    print(f"continuing in PyTorch: {WORLD_SIZE} processes x {DDP_EPOCHS} epochs")
    module = continue_training_ddp(est, images, labels)
    trained = tinycnn.from_torch(module, like=est)
    after = trained.score(X_test, y_test)
    if trained.network_ != est.network_:
        print("error: the stack that came back is not the one exported", file=sys.stderr)
        return 1

    # The estimator that came back computes what the trained module computes.
    with torch.no_grad():
        logits = module(torch.from_numpy(X_test.reshape(-1, 1, 8, 8).astype(np.float32)))
    if not np.array_equal(trained.predict(X_test), est.classes_[logits.argmax(1).numpy()]):
        print("error: tinycnn and the PyTorch module disagree", file=sys.stderr)
        return 1

    print(f"test accuracy before: {before:.4f} (tinycnn, {TINYCNN_EPOCHS} epochs)")
    print(f"test accuracy after:  {after:.4f} (+ {DDP_EPOCHS} epochs of DDP, back in tinycnn)")
    if after < before:
        print("error: continuing the training made the model worse", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
