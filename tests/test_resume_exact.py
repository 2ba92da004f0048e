"""A run interrupted mid-epoch and resumed ends bit-for-bit where the uninterrupted run ends:
same data order, same augmentations, same masks (moma.data.resumable, RNG in checkpoints)."""

import pytest
import torch
from PIL import Image
from toy import TINY

from moma.data import DataConfig, SSLDataModule
from moma.methods.mae import MAEConfig, MAEMethod
from moma.methods.optim import OptimConfig
from moma.run_folder import read_metrics
from moma.train import TrainerConfig, fit, last_checkpoint

SMALL = MAEConfig(mask_ratio=0.75, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


class Killed(Exception):
    pass


class CrashingMAE(MAEMethod):
    crash_at = 7  # the last checkpoint before it is step 6: epoch 1, batch 2 of 4

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == self.crash_at:
            raise Killed


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    g = torch.Generator().manual_seed(0)
    for i in range(64):
        px = torch.randint(0, 256, (20, 20, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(px.numpy()).save(folder / f"{i:02d}.png")
    return folder


def _run(method_cls, images, out):
    torch.manual_seed(0)
    module = method_cls(SMALL, TINY, OptimConfig(base_lr=1e-3))
    data = SSLDataModule(DataConfig(dataset=str(images), img_size=16, batch_size=16, seed=5))
    cfg = TrainerConfig(out_dir=str(out), max_steps=12, precision="32-true", ckpt_every_n_steps=3,
                        progress_bar=False, log_every_n_steps=1)  # fmt: skip
    return fit(module, data, cfg)


def test_mid_epoch_resume_equals_the_uninterrupted_run(images, tmp_path):
    _run(MAEMethod, images, tmp_path / "a")
    with pytest.raises(Killed):
        _run(CrashingMAE, images, tmp_path / "b")
    ck = torch.load(last_checkpoint(tmp_path / "b"), weights_only=True)
    assert ck["global_step"] == 6 and "rng" in ck
    r = _run(MAEMethod, images, tmp_path / "b")  # the same command again resumes
    assert r.global_step == 12
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert dict(b)[11] == dict(a)[11]  # the last step's loss, exactly
    assert [v for s, v in b if s >= 6] == [v for s, v in a if s >= 6]
    wa = torch.load(last_checkpoint(tmp_path / "a"), weights_only=True)["state_dict"]
    wb = torch.load(last_checkpoint(tmp_path / "b"), weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sampler_order_depends_on_seed_and_epoch_and_skips_once():
    from moma.data.resumable import ResumableSampler

    data = list(range(40))
    s = ResumableSampler(data, seed=1)
    first = list(s)
    assert sorted(first) == data and list(s) == first  # same epoch, same order
    s.set_epoch(1)
    second = list(s)
    assert second != first
    s.skip(1, 16)
    assert list(s) == second[16:] and list(s) == second  # skipped once
    s.skip(0, 8)  # another epoch's position does not apply to epoch 1
    assert list(s) == second
    halves = [list(ResumableSampler(data, seed=1, rank=r, num_replicas=2)) for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == data
