"""A careless user's model file: copied as user.py into each bad-input workspace (tests/cli/_workspace.py).

``tiny()`` touches ``factory-called`` beside the file: a command that must refuse an output before any
work must not have built the model. The other factories are what a user gets wrong.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

EXABYTE = 2**60  # more bytes than any address space holds: the allocation fails whatever the overcommit policy

CALLED = Path(__file__).with_name("factory-called")


class Net(nn.Module):
    def __init__(self, kind="plain"):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)
        self.bn.num_batches_tracked += 1
        self.head = nn.Linear(4 * 8 * 8, 3)
        self.kind = kind

    def forward(self, x):
        y = self.head(torch.relu(self.bn(self.conv(x))).flatten(1))
        if self.kind == "none":
            return None
        if self.kind == "str":
            return "logits"
        if self.kind == "int":
            return y.argmax(1)
        if self.kind == "nan":
            return torch.log(y - 1e3)
        if self.kind == "exit":
            sys.exit(0)
        if self.kind == "torch-oom":
            return y + torch.empty(EXABYTE, dtype=torch.uint8).sum()
        if self.kind == "numpy-oom":
            return y + float(np.empty(EXABYTE, dtype=np.uint8).sum())
        if self.kind == "branch":
            return y * 2 if y.sum() > 0 else y
        if self.kind == "unexportable":   # a data-dependent branch (dynamo) to an op TorchScript cannot lower
            return torch.linalg.eigvalsh(y.T @ y)[None] if y.sum() > 0 else y
        return y


def tiny(kind="plain"):
    CALLED.touch()
    return Net(kind).eval()


def nan_var():
    m = tiny(); m.bn.running_var[2] = float("nan"); return m


def negative_var():
    m = tiny(); m.bn.running_var[1] = -0.5; return m


def zero_var_zero_eps():
    m = tiny(); m.bn.running_var[3] = 0.0; m.bn.eps = 0.0; return m


def inf_weight():
    m = tiny(); m.bn.weight.data[0] = float("inf"); return m


def half():
    return tiny().half()


def meta():
    with torch.device("meta"):
        return Net().eval()


def exits():
    sys.exit(3)


def refused_pickle():
    torch.load(Path(__file__).with_name("checkpoint.pt"), weights_only=True)
    return tiny()


def returns_none():
    return None


def forward_none():
    return tiny("none")


def forward_str():
    return tiny("str")


def forward_int():
    return tiny("int")


def forward_nan():
    return tiny("nan")


def forward_exits():
    return tiny("exit")


def branch():
    return tiny("branch")


def unexportable():
    return tiny("unexportable")


def torch_oom():
    return tiny("torch-oom")


def numpy_oom():
    return tiny("numpy-oom")
