"""Shared fixtures: tiny hand-checkable models and the pretrained model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_helpers as xh


class GapLinear(nn.Module):
    """features (identity: the input *is* the activation) -> global average pool -> Linear.

    With the input as the activation, every value in a test can be worked out
    on paper.
    """

    def __init__(self, weight, bias=None):
        super().__init__()
        weight = torch.as_tensor(weight, dtype=torch.float32)
        self.features = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            if bias is not None:
                self.fc.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class SmallCNN(nn.Module):
    """A small random CNN with BatchNorm and in-place ReLUs, GAP -> Linear head."""

    def __init__(self, classes: int = 5, width: int = 12):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics, so eval and train modes differ."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    return randomize_bn(SmallCNN()).eval()


@pytest.fixture(scope="session")
def lite0():
    return xh.load_model()


@pytest.fixture(scope="session")
def cat_x(lite0):
    return lite0.preprocess("chelsea")


def all_hooks(model: nn.Module) -> int:
    """Number of hooks of any kind on the model and its submodules."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            total += len(getattr(m, attr, {}))
    return total
