"""The MLP family: the network, and the served model that carries its own preprocessing."""

from __future__ import annotations

import torch
from torch import nn


class ChurnMLP(nn.Module):
    """MLP on standardized features; outputs one logit per row."""

    def __init__(self, n_features: int, hidden_sizes: list[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ChurnModel(nn.Module):
    """Raw feature rows in, a probability (binary) or a value (regression) out: imputation and
    scaling fitted on the training split (by Ray Data) are buffers here, so serving needs no
    separate preprocessor."""

    # a class default: models pickled before regression existed load as binary
    probability = True

    def __init__(self, mlp: ChurnMLP, impute: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, probability: bool = True) -> None:
        super().__init__()
        self.mlp = mlp
        self.probability = probability
        self.register_buffer("impute", impute.float())
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", torch.where(std > 0, std, torch.ones_like(std)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.mean.dtype)
        x = torch.where(torch.isnan(x), self.impute, x)
        output = self.mlp((x - self.mean) / self.std)
        return torch.sigmoid(output) if self.probability else output
