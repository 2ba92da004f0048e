import pytest
import torch
from toy import TINY

from moma.models.masking import (
    embed_tokens,
    forward_encoder_masked,
    gather_tokens,
    num_kept,
    random_masking,
)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return TINY.build().eval()


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9, 0.95, 0.98])
@pytest.mark.parametrize("n", [1, 3])
def test_kept_count_and_mask(ratio, n):
    x = torch.randn(n, 64, 8)
    kept, mask, ids_restore, ids_keep = random_masking(x, ratio)
    k = num_kept(64, ratio)
    assert k == max(1, int(64 * (1 - ratio)))
    assert kept.shape == (n, k, 8) and ids_keep.shape == (n, k)
    assert mask.shape == (n, 64)
    assert torch.all(mask.sum(1) == 64 - k)
    # the mask marks exactly the positions that were not kept
    for i in range(n):
        assert torch.all(mask[i, ids_keep[i]] == 0)
        assert torch.equal(kept[i], x[i, ids_keep[i]])


def test_restore_indices_invert_the_shuffle():
    x = torch.randn(4, 16, 3)
    kept, mask, ids_restore, ids_keep = random_masking(x, 0.75)
    # MAE's decoder: append placeholders for removed tokens, then un-shuffle with ids_restore
    removed = torch.zeros(4, 16 - kept.shape[1], 3)
    full = torch.gather(torch.cat([kept, removed], 1), 1, ids_restore[..., None].expand(-1, -1, 3))
    vis = mask == 0
    assert torch.equal(full[vis], x[vis])
    assert torch.all(full[~vis] == 0)


def test_different_samples_get_different_masks_and_seed_is_deterministic():
    x = torch.randn(8, 64, 4)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    _, m1, _, _ = random_masking(x, 0.75, generator=g1)
    _, m2, _, _ = random_masking(x, 0.75, generator=g2)
    assert torch.equal(m1, m2)
    assert len({tuple(r.tolist()) for r in m1}) == 8


@pytest.mark.parametrize("ratio", [-0.1, 0.99, 1.0])
def test_out_of_range_ratio_is_refused(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.randn(1, 4, 2), ratio)


def test_ratio_zero_equals_plain_forward(vit):
    imgs = torch.randn(3, 3, 16, 16)
    out = forward_encoder_masked(vit, imgs, 0.0)
    with torch.no_grad():
        ref = vit.forward_features(imgs)
    assert out.tokens.shape == ref.shape
    torch.testing.assert_close(out.tokens, ref, rtol=0, atol=0)


def test_masked_forward_keeps_cls_and_matches_visible_subset(vit):
    imgs = torch.randn(2, 3, 16, 16)
    out = forward_encoder_masked(vit, imgs, 0.75, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 1 + 4, 32)
    assert out.prefix.shape == (2, 1, 32) and out.patches.shape == (2, 4, 32)
    # Same result as running the blocks by hand on [CLS, visible tokens]
    x = embed_tokens(vit, imgs)
    manual = torch.cat([x[:, :1], gather_tokens(x[:, 1:], out.ids_keep)], 1)
    ref = vit.norm(vit.blocks(vit.norm_pre(manual)))
    torch.testing.assert_close(out.tokens, ref)


def test_blocks_see_only_visible_tokens(vit):
    seen = []
    h = vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    forward_encoder_masked(vit, torch.randn(2, 3, 16, 16), 0.9)
    h.remove()
    assert seen == [1 + num_kept(16, 0.9)]
