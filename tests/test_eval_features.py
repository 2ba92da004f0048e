"""Feature extraction and the baseline backbones."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from moma.errors import ConfigError
from moma.eval.baselines import RawPixels, random_init_backbone, resolve_backbone
from moma.eval.features import extract_features


def _data(n=10):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 3)


def test_cls_and_mean_features_match_forward_features(tiny_vit):
    vit = tiny_vit()
    data = _data()
    x, y = data.tensors
    with torch.no_grad():
        tokens = vit.forward_features(x)
    cls, labels = extract_features(vit, data, "cls", batch_size=4, precision="32")
    mean, _ = extract_features(vit, data, "mean", 4, "32")
    assert cls.dtype == torch.float32 and cls.shape == (10, 32)
    assert torch.allclose(cls, tokens[:, 0], atol=1e-5)
    assert torch.allclose(mean, tokens[:, 1:].mean(1), atol=1e-5)
    assert torch.equal(labels, y)
    assert vit.training  # mode restored


def test_loader_in_ram_and_bf16_paths_agree(tiny_vit):
    vit = tiny_vit()
    data = _data()

    class InRam(torch.utils.data.Dataset):
        images, labels = data.tensors

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            raise AssertionError("in-RAM datasets are sliced, not indexed")

    a, _ = extract_features(vit, DataLoader(data, batch_size=3), "cls", precision="32")
    b, _ = extract_features(vit, InRam(), "cls", batch_size=4, precision="32")
    c, _ = extract_features(vit, data, "cls", precision="bf16")
    assert torch.allclose(a, b, atol=1e-5)
    assert c.dtype == torch.float32 and torch.allclose(a, c, atol=0.1)


def test_raw_pixels_and_random_init_baselines(tiny):
    data = _data(4)
    feats, _ = extract_features(RawPixels(), data, "cls", precision="32")
    assert torch.equal(feats, data.tensors[0].flatten(1))
    cfg = tiny
    a, b = random_init_backbone(cfg, seed=3), random_init_backbone(cfg, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    rb = resolve_backbone("random-init", cfg, seed=3)
    assert rb.sha256 is None and rb.is_baseline and rb.identity["seed"] == 3
    assert resolve_backbone("raw-pixels").spec == "raw-pixels"
    with pytest.raises(ConfigError, match="neither a file"):
        resolve_backbone("/no/such/file.pth")
    with pytest.raises(ConfigError, match="features"):
        extract_features(RawPixels(), data, "max")


def test_uint8_in_ram_dataset_uses_its_batch_transform():
    class Uint8Set(torch.utils.data.Dataset):
        """The ImageTensorDataset contract: uint8 images + a whole-batch transform."""

        images = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
        labels = torch.arange(6)

        def transform(self, x):
            return (x.float() / 255).expand(-1, 3, -1, -1) - 0.5

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return self.transform(self.images[i : i + 1])[0], int(self.labels[i])

    ds = Uint8Set()
    feats, labels = extract_features(RawPixels(), ds, batch_size=4, precision="32")
    ref = torch.stack([ds[i][0] for i in range(6)]).flatten(1)
    assert torch.equal(feats, ref) and torch.equal(labels, torch.arange(6))
