"""What the teacher-target cache buys: a cached MOMA step against an uncached one and MAE.

Every row of this group includes its data work, because the cache moves work there: a
cached step regenerates its keyed views (`moma.data.keyed_views`) and reads the targets from
a memory-mapped store (`moma.methods.target_store`), an uncached or MAE step augments its
batch with the in-RAM batched augmentation; all start from uint8 images already in memory.

- *cached MOMA step*: keyed views + store lookup + the student step (2 teachers' projectors);
- *uncached MOMA step*: batch augmentation + both teachers' forwards + the same student step;
- *MAE step*: batch augmentation + the MAE step of the same student backbone;
- *cache build*: keyed views + one teacher's forward in inference mode at the build batch,
  per image and view (a one-off cost, reported on its own).

Shapes: N batch, S image side, K cached views, D teacher width.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from moma.bench.cases import Case, TrainStep, autocast, build_moma
from moma.bench.presets import SizePreset
from moma.data.batch_augment import BatchAugment
from moma.data.keyed_views import KeyedViews
from moma.data.recipes import view_recipes
from moma.methods.mae import MAEMethod
from moma.methods.moma_cache import StoreLookup
from moma.methods.target_store import StoreLayout, TargetStore

STORE_IMAGES = 4096  # rows of the benchmark's store; lookups are random over them
STORE_VIEWS = 4
_MEAN, _STD = (0.5,) * 3, (0.25,) * 3


def stored_side(img_size: int) -> int:
    """Side of the uint8 images in RAM: the model input at 32 px (Fashion-MNIST is stored
    padded to 32), larger at 224 px (decoded images are cropped from a bigger picture)."""
    return img_size if img_size <= 32 else round(img_size * 8 / 7)


def random_store(folder: Path, dims: list[int], dtype: str = "float16") -> list[TargetStore]:
    """One store per teacher width in ``dims``, filled with random CLS targets."""
    stores = []
    for i, d in enumerate(dims):
        layout = StoreLayout(STORE_IMAGES, STORE_VIEWS, {"cls": (d,)}, dtype, 2048)
        store = TargetStore.create(folder / str(i), {"bench": i}, layout, {})
        g = torch.Generator().manual_seed(i)
        for c in range(layout.num_chunks):
            a, b = layout.chunk_range(c)
            store.write_chunk(c, {"cls": torch.randn(b - a, STORE_VIEWS, d, generator=g)})
        stores.append(store)
    return stores


def cache_cases(
    preset: SizePreset,
    precision: str,
    batch: int,
    device: torch.device,
    seed: int,
    mask_ratio: float = 0.9,
    build_batch: int | None = None,
) -> Iterator[Case]:
    """Cached vs uncached two-teacher MOMA steps and MAE, for each student of ``preset``,
    data included; then the per-image cost of building the cache."""
    t_label, t_cfg = preset.teacher
    side = stored_side(preset.img_size)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, side, side), generator=g, dtype=torch.uint8)
    images = images.to(device)
    recipe = view_recipes("mae", 1, 0.2)[0]
    keyed = KeyedViews(recipe, preset.img_size, _MEAN, _STD, seed)
    augment = BatchAugment("mae", 1, preset.img_size, 0.2, _MEAN, _STD, seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix="moma-bench-cache-"))
    lookup = StoreLookup(random_store(tmp, [int(t_cfg.build().embed_dim)] * 2))
    rng = np.random.default_rng(seed)

    def keys() -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(rng.integers(0, STORE_IMAGES, batch)).to(device)
        view = torch.from_numpy(rng.integers(0, STORE_VIEWS, batch)).to(device)
        return index, view

    def cached_batch() -> tuple:
        index, view = keys()
        return keyed(images, index, view), None, lookup(index, view)

    def augmented_batch() -> tuple:
        return augment(images), None

    students = [preset.student] + ([preset.compact_student] if preset.compact_student else [])
    for s_label, s_cfg in students:
        module = build_moma(t_cfg, s_cfg, 2, mask_ratio, device, targets="cls")
        model = f"2x {t_label} -> {s_label}"
        extra = {"teachers": 2, "mask_ratio": mask_ratio, "student": s_label}
        cached = TrainStep(module, cached_batch, batch, device, precision)
        live = TrainStep(module, augmented_batch, batch, device, precision)
        yield Case("cache", f"cache:cached:{s_label}", "cached MOMA step, 2 teachers (+ data)",
                   model, precision, batch, cached, extra=extra)  # fmt: skip
        yield Case("cache", f"cache:live:{s_label}", "uncached MOMA step, 2 teachers (+ data)",
                   model, precision, batch, live, extra=extra)  # fmt: skip
        mae = MAEMethod(preset.mae, s_cfg).to(device).train()
        yield Case("cache", f"cache:mae:{s_label}", "MAE step, same student (+ data)",
                   f"{s_label} + MAE decoder", precision, batch,
                   TrainStep(mae, augmented_batch, batch, device, precision))  # fmt: skip

    module = build_moma(t_cfg, preset.student[1], 1, mask_ratio, device, targets="cls").eval()
    nb = int(build_batch or batch)
    big = torch.randint(0, 256, (nb, 3, side, side), generator=g, dtype=torch.uint8).to(device)

    def build_step() -> torch.Tensor:
        index = torch.arange(nb, device=device)
        with torch.inference_mode(), autocast(device, precision):
            x = keyed(big, index, torch.zeros_like(index))
            return module.teacher_output(0, x).cls

    yield Case("cache", "cache:build", "cache build: keyed views + 1 teacher forward",
               t_label, precision, nb, build_step)  # fmt: skip
