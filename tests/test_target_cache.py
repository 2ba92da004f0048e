"""The teacher-target cache: keyed views, exact targets, keys, damage, resumable builds, runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from toy import TINY

from moma.commands.distill import MomaRunConfig, StudentConfig, TeacherConfig, run_moma
from moma.data import DataConfig, SSLDataModule
from moma.data.keyed_views import KeyedViews, view_schedule
from moma.data.recipes import view_recipes
from moma.methods import moma_cache
from moma.methods.moma import MomaMethod, Teacher
from moma.methods.moma_cache import StoreLookup, prepare_stores
from moma.methods.moma_config import CacheConfig
from moma.methods.target_store import TargetStore
from moma.train import TrainerConfig


def _folder(root: Path, n: int = 24) -> str:
    g = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n // 2):
            Image.fromarray(g.integers(0, 255, (20, 18, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    return str(root)


def _dm(dataset: str, views: int = 2, **kw) -> SSLDataModule:
    cfg = DataConfig(dataset=dataset, img_size=16, batch_size=8, **kw)
    dm = SSLDataModule(cfg, views=1, augment="mae", keyed_views=views)
    dm.setup("fit")
    return dm


def _method(teachers=None, targets="cls+patch") -> MomaMethod:
    torch.manual_seed(0)
    teachers = teachers or [Teacher(TINY.build(), "t")]
    run = MomaRunConfig()
    run.moma.targets = targets
    return MomaMethod(teachers, TINY.build(), run.moma, run.optim)


def _views(n: int = 6) -> KeyedViews:
    return KeyedViews(view_recipes("mae", 1, 0.2)[0], 16, (0.5,) * 3, (0.25,) * 3, seed=3)


def test_keyed_views_are_a_pure_function_of_their_key():
    imgs = torch.randint(0, 255, (12, 3, 20, 18), dtype=torch.uint8)
    idx, view = torch.arange(12), torch.tensor([0, 1] * 6)
    kv = _views()
    a = kv(imgs, idx, view)
    perm = torch.randperm(12)
    assert torch.equal(kv(imgs[perm], idx[perm], view[perm]), a[perm])  # any batch order
    assert torch.equal(kv(imgs[:5], idx[:5], view[:5]), a[:5])  # any batch size
    assert not torch.equal(kv(imgs, idx, 1 - view), a)  # another view is another crop
    other_seed = KeyedViews(kv.recipe, 16, kv.mean, kv.std, seed=4)
    assert not torch.equal(other_seed(imgs, idx, view), a)


def test_view_schedule_cycles_through_every_view():
    idx = torch.arange(200)
    seen = torch.stack([view_schedule(0, e, idx, 4) for e in range(4)])  # [epochs, N]
    assert all(sorted(seen[:, i].tolist()) == [0, 1, 2, 3] for i in range(200))
    assert len(set(seen[0].tolist())) == 4  # images start at different views


def test_cached_target_equals_live_teacher_output_exactly_in_fp32(tmp_path):
    dm = _dm(_folder(tmp_path / "data"))
    module = _method()
    cfg = CacheConfig(views=3, dtype="float32", batch_size=5)
    recs = prepare_stores(module, dm, cfg, tmp_path / "targets", torch.device("cpu"))
    lookup = StoreLookup([r["store"] for r in recs])
    index = torch.tensor([3, 17, 0, 9, 23, 11, 3])
    view = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    images = dm.train_images()
    with torch.inference_mode():
        live = module.teacher_output(0, dm.keyed(images[index], index, view))
    cached = lookup(index, view)[0]
    assert cached.cls.dtype == torch.float32
    assert torch.equal(cached.cls, live.cls)
    assert torch.equal(cached.patches, live.patches)


def test_cache_is_keyed_by_teacher_data_and_recipe(tmp_path):
    data = _folder(tmp_path / "data")
    root = tmp_path / "targets"
    cfg = CacheConfig(views=2)

    def folder_for(module, dm, c=cfg):
        return prepare_stores(module, dm, c, root, torch.device("cpu"))[0]["folder"]

    base = folder_for(_method(), _dm(data))
    again = prepare_stores(_method(), _dm(data), cfg, root, torch.device("cpu"))[0]
    assert again["folder"] == base and again["built_chunks"] == 0  # reused
    torch.manual_seed(1)
    other_teacher = _method([Teacher(TINY.build(), "t")])
    # _method re-seeds the student only; the teacher above has other weights
    assert folder_for(other_teacher, _dm(data)) != base
    assert folder_for(_method(), _dm(data, subset=20)) != base  # other data
    assert folder_for(_method(), _dm(data, min_scale=0.5)) != base  # other recipe
    assert folder_for(_method(), _dm(data, seed=1)) != base  # other view seed
    assert folder_for(_method(), _dm(data, views=3), CacheConfig(views=3)) != base
    assert folder_for(_method(targets="cls"), _dm(data)) != base  # other kinds
    # moving a file between classes changes the data fingerprint, so the key
    Path(data, "a", "0.png").rename(Path(data, "b", "99.png"))
    assert folder_for(_method(), _dm(data)) != base


def test_open_refuses_a_store_made_for_another_key(tmp_path):
    dm = _dm(_folder(tmp_path / "data"))
    module = _method()
    rec = prepare_stores(module, dm, CacheConfig(views=2), tmp_path / "t", torch.device("cpu"))[0]
    store = rec["store"]
    other = dict(store.key, teacher_sha256="0" * 64)
    got, why = TargetStore.open(Path(rec["folder"]), other, store.layout)
    assert got is None and "teacher_sha256" in why


def test_damaged_store_is_caught_and_rebuilt(tmp_path, caplog):
    dm = _dm(_folder(tmp_path / "data"))
    module = _method()
    cfg = CacheConfig(views=2, dtype="float32")
    root = tmp_path / "targets"
    rec = prepare_stores(module, dm, cfg, root, torch.device("cpu"))[0]
    folder = Path(rec["folder"])
    good = rec["store"].lookup(np.arange(24), np.zeros(24, dtype=np.int64))["cls"].clone()

    # flipped bytes in one chunk: that chunk fails its digest and is recomputed
    raw = bytearray((folder / "cls.bin").read_bytes())
    raw[10] ^= 0xFF
    (folder / "cls.bin").write_bytes(bytes(raw))
    rec = prepare_stores(module, dm, cfg, root, torch.device("cpu"))[0]
    assert "failed their sha256 check" in caplog.text
    assert rec["built_chunks"] == 1
    assert torch.equal(
        rec["store"].lookup(np.arange(24), np.zeros(24, dtype=np.int64))["cls"], good
    )

    # a truncated file: the store is rebuilt whole
    caplog.clear()
    with open(folder / "patch.bin", "r+b") as f:
        f.truncate(100)
    rec = prepare_stores(module, dm, cfg, root, torch.device("cpu"))[0]
    assert "truncated" in caplog.text and "rebuilding" in caplog.text
    assert rec["built_chunks"] == rec["chunks"]

    # a meta.json that no longer matches (e.g. edited): rebuilt, never used
    caplog.clear()
    meta = json.loads((folder / "meta.json").read_text())
    meta["key"]["views"] = 7
    (folder / "meta.json").write_text(json.dumps(meta))
    rec = prepare_stores(module, dm, cfg, root, torch.device("cpu"))[0]
    assert "another teacher/data/recipe" in caplog.text
    assert rec["built_chunks"] == rec["chunks"]


def test_killed_build_keeps_finished_chunks(tmp_path, monkeypatch):
    dm = _dm(_folder(tmp_path / "data"))
    module = _method()
    cfg = CacheConfig(views=2)
    root = tmp_path / "targets"
    write = TargetStore.write_chunk
    calls = []

    def dies_on_the_fourth(self, c, arrays):
        calls.append(c)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill would, mid-build
        write(self, c, arrays)

    monkeypatch.setattr(TargetStore, "write_chunk", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepare_stores(module, dm, cfg, root, torch.device("cpu"))
    monkeypatch.setattr(TargetStore, "write_chunk", write)
    rec = prepare_stores(module, dm, cfg, root, torch.device("cpu"))[0]
    assert rec["chunks"] == 12  # 24 images: chunks of 2
    assert rec["built_chunks"] == rec["chunks"] - 3  # the three finished ones were kept


def test_moma_run_with_cache_never_calls_its_teachers(tmp_path, monkeypatch):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pth"
    torch.save(TINY.build().state_dict(), teacher)
    cfg = MomaRunConfig(
        data=DataConfig(dataset=_folder(tmp_path / "data", 32), img_size=16, batch_size=8),
        teachers=[TeacherConfig(path=str(teacher), name="t")],
        student=StudentConfig(backbone=TINY),
        cache=CacheConfig(views=2),
        trainer=TrainerConfig(
            out_dir=str(tmp_path / "run"), max_epochs=3, precision="32-true", progress_bar=False
        ),
    )
    live_calls = []
    build = moma_cache.prepare_stores

    def build_then_forbid(module, *a, **kw):
        out = build(module, *a, **kw)
        module.teacher_output = lambda *_: live_calls.append(1)  # training must not get here
        return out

    monkeypatch.setattr(moma_cache, "prepare_stores", build_then_forbid)
    r = run_moma(cfg)
    assert r.global_step == 12 and not live_calls
    summary = json.loads((tmp_path / "run" / "target_cache.json").read_text())
    assert summary["views"] == 2 and summary["teachers"][0]["built_chunks"] == 16
    assert Path(summary["teachers"][0]["folder"]).parent == tmp_path / "targets"
    ck = torch.load(r.checkpoint, weights_only=True)
    assert not any(k.startswith("teachers.") for k in ck["state_dict"])
    assert "target" not in json.dumps(list(ck.get("callbacks", {})))  # no cache state saved


def test_cached_run_resumed_mid_epoch_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    from moma.methods.base import SSLMethod
    from moma.run_folder import read_metrics
    from moma.train import last_checkpoint

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pth"
    torch.save(TINY.build().state_dict(), teacher)
    data = _folder(tmp_path / "data", 32)

    def run(out):
        torch.manual_seed(0)
        return run_moma(
            MomaRunConfig(
                data=DataConfig(dataset=data, img_size=16, batch_size=8, seed=5),
                teachers=[TeacherConfig(path=str(teacher), name="t")],
                student=StudentConfig(backbone=TINY),
                cache=CacheConfig(views=2, dir=str(tmp_path / "targets")),
                trainer=TrainerConfig(
                    out_dir=str(out),
                    max_steps=12,
                    precision="32-true",
                    ckpt_every_n_steps=3,
                    progress_bar=False,
                    log_every_n_steps=1,
                ),  # fmt: skip
            )
        )

    run(tmp_path / "a")

    class Killed(Exception):
        pass

    def crash_at_7(self, batch, batch_idx):
        if self.global_step == 7:  # epoch 1, batch 3 of 4: the last checkpoint is step 6
            raise Killed
        SSLMethod.on_train_batch_start(self, batch, batch_idx)

    with monkeypatch.context() as m:
        m.setattr(MomaMethod, "on_train_batch_start", crash_at_7)
        with pytest.raises(Killed):
            run(tmp_path / "b")
    assert torch.load(last_checkpoint(tmp_path / "b"), weights_only=True)["global_step"] == 6
    assert run(tmp_path / "b").global_step == 12
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [v for s, v in b if s >= 6] == [v for s, v in a if s >= 6]
    wa = torch.load(last_checkpoint(tmp_path / "a"), weights_only=True)["state_dict"]
    wb = torch.load(last_checkpoint(tmp_path / "b"), weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_streamed_folder_cache_matches_live_targets_and_trains(tmp_path, monkeypatch):
    """A folder streamed from disk (workers decode and crop the keyed view): the stored target
    is the teacher's output on that crop, whatever the batch or worker count."""
    from moma.data.keyed_stream import KeyedViewSampler

    data = _folder(tmp_path / "data", 32)
    dm = _dm(data, views=3, in_memory=False, num_workers=2)
    assert not dm.in_memory
    module = _method()
    cfg = CacheConfig(views=3, dtype="float32", batch_size=7)
    rec = prepare_stores(module, dm, cfg, tmp_path / "targets", torch.device("cpu"))[0]
    assert rec["store"].key["view_recipe"]["views"] == "keyed-uint8-crop-flip-v1"
    in_ram = prepare_stores(module, _dm(data, views=3), cfg, tmp_path / "t2", torch.device("cpu"))
    assert Path(in_ram[0]["folder"]).name != Path(rec["folder"]).name  # other views, other key
    lookup = StoreLookup([rec["store"]])
    for index, x in dm.keyed_batches(5, 16, 2, 4, torch.device("cpu")):  # other batches
        with torch.inference_mode():
            live = module.teacher_output(0, x)
        cached = lookup(index, torch.full_like(index, 2))[0]
        assert torch.equal(cached.cls, live.cls) and torch.equal(cached.patches, live.patches)

    sampler = KeyedViewSampler(dm._train, seed=0)
    sampler.set_epoch(3)
    keys = list(sampler)
    assert sorted(i for _, i in keys) == list(range(32))  # each image once
    want = view_schedule(0, 3, torch.tensor([i for _, i in keys]), 3).tolist()
    assert [v for v, _ in keys] == want

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pth"
    torch.save(TINY.build().state_dict(), teacher)
    run = MomaRunConfig(
        data=DataConfig(dataset=data, img_size=16, batch_size=8, in_memory=False, num_workers=2),
        teachers=[TeacherConfig(path=str(teacher), name="t")],
        student=StudentConfig(backbone=TINY),
        cache=CacheConfig(views=2),
        trainer=TrainerConfig(
            out_dir=str(tmp_path / "run"), max_epochs=2, precision="32-true", progress_bar=False
        ),
    )
    build = moma_cache.prepare_stores

    def build_then_forbid(module, *a, **kw):
        out = build(module, *a, **kw)
        module.teacher_output = None  # training must never run a teacher
        return out

    monkeypatch.setattr(moma_cache, "prepare_stores", build_then_forbid)
    assert run_moma(run).global_step == 8


def test_auto_views_cache_only_runs_that_reuse_a_view(tmp_path):
    from moma.commands.distill import AUTO_VIEWS, resolve_views

    data = _folder(tmp_path / "data", 32)  # 32 images: 4 steps of 8 per epoch

    def views(**trainer):
        cfg = MomaRunConfig(data=DataConfig(dataset=data, img_size=16, batch_size=8))
        cfg.trainer = TrainerConfig(**trainer)
        return resolve_views(cfg)

    assert views(max_epochs=10) == AUTO_VIEWS == 2
    assert views(max_epochs=2) == 0  # the teachers would run as often with a cache
    assert views(max_steps=12) == 2  # 3 epochs
    assert views(max_steps=8) == 0  # 2 epochs
    assert views(max_steps=4, accumulate_grad_batches=2) == 0  # 4 steps of 16 images: 2 epochs
    assert views(max_steps=6, accumulate_grad_batches=2) == 2  # 3 epochs
    cfg = MomaRunConfig(cache=CacheConfig(views=5))
    assert resolve_views(cfg) == 5  # an explicit K is kept
