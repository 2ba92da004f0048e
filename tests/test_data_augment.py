"""moma.data.batch_augment: the batched in-RAM augmentation, per image and vs torchvision."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from moma.data import BatchAugment
from moma.data import batch_augment as B
from moma.data import color_ops as C


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pattern(n: int = 1, c: int = 1, size: int = 32) -> torch.Tensor:
    """uint8 [n, c, size, size] with distinct values everywhere (a gradient + noise)."""
    g = _gen(1)
    base = torch.arange(size * size).view(size, size) % 251
    noise = torch.randint(0, 5, (c, size, size), generator=g)
    return ((base + noise) % 256).to(torch.uint8).expand(n, c, size, size).contiguous()


@pytest.mark.parametrize("augment, views", [("mae", 1), ("mae", 2), ("mocov3", 2), ("mocov3", 1)])
def test_per_sample_different_views(augment: str, views: int) -> None:
    imgs = _pattern(n=16, c=1)  # the same image 16 times
    aug = BatchAugment(augment, views, 32, 0.2, (0.5,) * 3, (0.25,) * 3, seed=0)
    out = aug(imgs)
    outs = [out] if views == 1 else out
    assert isinstance(out, torch.Tensor) == (views == 1)
    for v in outs:
        assert v.shape == (16, 3, 32, 32) and v.dtype == torch.float32
        # every image got its own crop: no two outputs of the same input are equal
        flat = v.flatten(1)
        assert torch.cdist(flat, flat).add(torch.eye(16) * 1e9).min() > 1e-3
        # within the normalised range of [0, 1] pixels
        assert v.min() >= (0 - 0.5) / 0.25 - 1e-4 and v.max() <= (1 - 0.5) / 0.25 + 1e-4
    if views == 2:
        assert not torch.allclose(outs[0], outs[1])


def test_seeded_reproducible_and_rgb_input() -> None:
    imgs = _pattern(n=4, c=3)
    a = BatchAugment("mocov3", 2, 16, 0.2, (0.5,) * 3, (0.25,) * 3, seed=7)
    b = BatchAugment("mocov3", 2, 16, 0.2, (0.5,) * 3, (0.25,) * 3, seed=7)
    for x, y in zip(a(imgs), b(imgs)):
        assert x.shape == (4, 3, 16, 16) and torch.equal(x, y)
    with pytest.raises(ValueError, match="uint8"):
        a(imgs.float())


def test_none_is_resize_and_normalise() -> None:
    imgs = _pattern(n=3, c=1)
    out = BatchAugment("none", 1, 32, 0.2, (0.2,) * 3, (0.5,) * 3)(imgs)
    expected = ((imgs.float() / 255 - 0.2) / 0.5).expand(-1, 3, -1, -1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_crop_boxes_valid() -> None:
    boxes = B.random_crop_boxes(500, 32, 24, (0.08, 1.0), _gen(), torch.device("cpu"))
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 24).all() and (y0 + h <= 32).all()
    area = w * h / (32 * 24)
    assert area.min() >= 0.06 and area.max() <= 1.0
    assert boxes.unique(dim=0).shape[0] > 400  # per-sample parameters


def test_crop_resize_flip_matches_slicing_and_torchvision() -> None:
    x = B.to_unit_float(_pattern(n=2, c=3, size=16))
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 2.0, 8.0, 8.0]])
    no_flip = torch.tensor([False, True])
    # Full box, same size: identity. Box of 8 px resized to 8: exactly the slice, mirrored.
    out = B.crop_resize_flip(x, full, no_flip, 16, bicubic=False)
    assert torch.allclose(out[0], x[0], atol=1e-5)
    small = B.crop_resize_flip(x, full, no_flip, 8, bicubic=True)
    assert torch.allclose(small[1], x[1, :, 2:10, 4:12].flip(-1), atol=1e-5)
    # Upscaling a crop: as torchvision's resized_crop (bilinear), except on the outer ring,
    # where we interpolate with the real neighbours outside the box, torchvision clamps.
    up = B.crop_resize_flip(x, full, torch.tensor([False, False]), 24, bicubic=False)
    ref = TF.resized_crop(x[1], top=2, left=4, height=8, width=8, size=[24, 24], antialias=False)
    assert torch.allclose(up[1, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-4)


def test_color_ops_match_torchvision() -> None:
    x = torch.rand(3, 3, 8, 8, generator=_gen())
    for shift in (-0.1, 0.05):
        ours = C.adjust_hue(x, torch.full((3,), shift))
        assert torch.allclose(ours, TF.adjust_hue(x, shift), atol=1e-4)
    f = torch.full((3,), 1.3)
    assert torch.allclose(C.jitter_op(1, x, f), TF.adjust_contrast(x, 1.3), atol=1e-4)
    assert torch.allclose(C.jitter_op(2, x, f), TF.adjust_saturation(x, 1.3), atol=1e-5)
    assert torch.allclose(C.jitter_op(0, x, f), TF.adjust_brightness(x, 1.3), atol=1e-6)
    assert torch.equal(C.color_jitter(x, 0.0, _gen()), x)  # p = 0: untouched
    gray = C.random_grayscale(x, 1.0, _gen())
    assert torch.allclose(gray, TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-5)
    sol = C.random_solarize(x, 1.0, _gen())
    assert torch.allclose(sol, TF.solarize(x, 128 / 255), atol=1e-6)


def test_gaussian_blur_matches_torchvision() -> None:
    x = torch.rand(2, 3, 12, 12, generator=_gen())
    ours = C.gaussian_blur(x, 1.0, (1.5, 1.5), 5, _gen())
    assert torch.allclose(ours, TF.gaussian_blur(x, [5, 5], [1.5, 1.5]), atol=1e-5)
    assert torch.allclose(C.gaussian_blur(x, 0.0, (1.5, 1.5), 5, _gen()), x, atol=1e-6)


def test_color_jitter_without_indexing_equals_the_grouped_one():
    """The GPU's synchronisation-free jitter computes what the grouped one does."""
    from moma.data.color_ops import color_jitter

    x = torch.rand(64, 3, 12, 12)
    a = color_jitter(x, 0.8, torch.Generator().manual_seed(3), grouped=True)
    b = color_jitter(x, 0.8, torch.Generator().manual_seed(3), grouped=False)
    assert not torch.equal(a, x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
