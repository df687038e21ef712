"""Models the GHN-2 parity fixtures were made with (see ../shared/fixtures/ghn2_parity/README.md)."""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """The fixtures' ``small_cnn``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=5, stride=1, padding=2, bias=True)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(24, 80, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(80)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(80, 10)
        self.expected_input_sz = 32

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(self.gap(x), 1))
