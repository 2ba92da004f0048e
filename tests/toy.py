"""A tiny method and datamodule for testing the training engine without real data."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from moma.methods.base import SSLMethod
from moma.methods.optim import OptimConfig
from moma.models.vit import BackboneConfig

TINY = BackboneConfig(
    arch="vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=2
)


class ToyData(L.LightningDataModule):
    def __init__(self, n: int = 64, batch_size: int = 8, size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, 4, (n,), generator=g)

    def train_dataloader(self):
        return DataLoader(
            TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=True, drop_last=True
        )


class ToyMethod(SSLMethod):
    """Regress the mean pixel from the CLS token (enough to exercise the engine)."""

    name = "toy"

    def __init__(self, nan_at: int | None = None, sleep: float = 0.0) -> None:
        super().__init__(OptimConfig(base_lr=1e-3), TINY.__dict__)
        self.encoder = TINY.build()
        self.head = nn.Linear(self.encoder.embed_dim, 1)
        self.nan_at = nan_at
        self.sleep = sleep

    def shared_step(self, batch):
        x, _ = batch
        if self.sleep:
            import time

            time.sleep(self.sleep)
        pred = self.head(self.encoder.forward_features(x)[:, 0]).squeeze(-1)
        loss = ((pred - x.mean(dim=(1, 2, 3))) ** 2).mean()
        if self.nan_at is not None and self.global_step >= self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss}

    def export_backbone(self):
        return self.encoder


class ToyTwoViewData(ToyData):
    """``([v1, v2], labels)`` batches: two noisy views of the same random images."""

    def __init__(
        self, n: int = 64, batch_size: int = 8, size: int = 16, noise: float = 0.1
    ) -> None:
        super().__init__(n, batch_size, size)
        g = torch.Generator().manual_seed(1)
        self.v1 = self.x + noise * torch.randn(self.x.shape, generator=g)
        self.v2 = self.x + noise * torch.randn(self.x.shape, generator=g)

    def train_dataloader(self):
        return DataLoader(
            _TwoViews(self.v1, self.v2, self.y),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
        )


class _TwoViews(torch.utils.data.Dataset):
    def __init__(self, v1, v2, y) -> None:
        self.v1, self.v2, self.y = v1, v2, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return [self.v1[i], self.v2[i]], self.y[i]


def _fashion_mnist_available() -> bool:
    from moma.data.fashion_mnist import find_root

    try:
        find_root(None)
    except Exception:
        return False
    return True


#: Marks a test that reads the embedded Fashion-MNIST files.
needs_fashion_mnist = pytest.mark.skipif(
    not _fashion_mnist_available(), reason="Fashion-MNIST files not installed"
)
