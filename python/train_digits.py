#!/usr/bin/python3
"""Train a small CNN on sklearn's 8x8 digits and export it to ONNX.

Outputs (under examples/digits/ by default):
  model.onnx           opset 17, input "input" [N,1,8,8], output "logits" [N,10]
  samples.npy          float32 [64,1,8,8] held-out test images, already preprocessed
  labels.npy           int64 [64] their true labels
  expected_logits.npy  float32 [64,10] PyTorch's logits for samples.npy

Preprocessing: pixel values (0..16 in the dataset) divided by 16 -> [0,1].
Usage: /usr/bin/python3 python/train_digits.py [--out examples/digits]
"""
import argparse
import os
import time

if __name__ == "__main__":
    # libgomp's default busy-waiting makes multi-threaded PyTorch up to ~50x slower
    # when the CPUs are oversubscribed (e.g. parallel CI jobs); must precede import torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import onnx
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
NUM_SAMPLES = 64
TIME_BUDGET_S = 60.0


def build_model():
    # 8x8 -> conv -> 8x8 -> pool -> 4x4 -> conv -> 4x4 -> pool -> 2x2 -> linear
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


def load_data():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def accuracy(model, x, y):
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/digits")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(2)

    x_train, x_test, y_train, y_test = load_data()
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)

    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
        if time.time() - start > TIME_BUDGET_S:
            print(f"time budget reached after {epoch + 1} epochs")
            break
    model.eval()
    print(f"trained in {time.time() - start:.1f}s")
    print(f"train accuracy: {accuracy(model, x_train, y_train):.4f}")
    test_acc = accuracy(model, x_test, y_test)
    print(f"test accuracy:  {test_acc:.4f} ({len(y_test)} images)")

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.onnx")
    torch.onnx.export(
        model,
        torch.from_numpy(x_test[:1]),
        model_path,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(model_path))

    samples = np.ascontiguousarray(x_test[:NUM_SAMPLES], dtype=np.float32)
    labels = y_test[:NUM_SAMPLES].astype(np.int64)
    with torch.no_grad():
        logits = model(torch.from_numpy(samples)).numpy().astype(np.float32)
    np.save(os.path.join(args.out, "samples.npy"), samples)
    np.save(os.path.join(args.out, "labels.npy"), labels)
    np.save(os.path.join(args.out, "expected_logits.npy"), logits)
    sample_acc = float((logits.argmax(1) == labels).mean())
    print(f"wrote {model_path} ({os.path.getsize(model_path)} bytes); "
          f"accuracy on the {NUM_SAMPLES} saved samples: {sample_acc:.4f}")
    if test_acc < 0.95:
        raise SystemExit("test accuracy below 95%")


if __name__ == "__main__":
    main()
