"""The one validation layer of run configs: every invalid value is a one-line `ConfigError`
naming the option (``trainer.max_steps must be -1 or >= 1, got -5``).

:func:`prepare_run` is the first thing every ``run_*`` function does, so the CLI and the
Python API meet here, once per run, before anything is built or written:

1. user paths are expanded (``~``, ``$VARS``; :mod:`moma.paths`), in the fields listed in
   :data:`PATH_FIELDS`;
2. every value of every config dataclass is checked (:func:`validate`): its type (a ``Literal``
   choice, an int, a finite float: NaN and inf are refused everywhere), the range rules of
   :data:`RULES`, then the class's own cross-field checks (:data:`CLASS_CHECKS`);
3. every random generator is seeded with ``trainer.seed`` (before the run builds a model).

Tables are keyed by class name so that this module imports no config module (and so no
torch) at import time; a subclass (``KnnRunConfig``) gets its bases' entries.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from moma.errors import ConfigError
from moma.paths import output_folder, user_path
from moma.seeding import seed_run

T = TypeVar("T")

SEED_MAX = 2**32 - 1  # numpy's (and Lightning's) bound
# Lightning's precision names (``Trainer(precision=...)``), aliases included.
PRECISIONS = (
    "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
    "32", "16", "bf16", "64", "transformer-engine", "transformer-engine-float16",
)  # fmt: skip
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
ATTENTION_MODES = ("auto", "fused", "math")
WEIGHT_FORMATS = ("auto", "mae", "mocov3", "timm", "moma")
# timm modules whose models are VisionTransformer (sub)classes
VIT_MODULES = ("vision_transformer", "deit", "vision_transformer_hybrid")


@dataclass(frozen=True)
class Rule:
    """A condition on one value and what the message says when it fails."""

    ok: Callable[[Any], bool]
    must: str  # completes "OPTION must ..."


def at_least(n: float) -> Rule:
    return Rule(lambda v: v >= n, f"be >= {n}")


def above(n: float) -> Rule:
    return Rule(lambda v: v > n, f"be > {n}")


def within(lo: float, hi: float, hi_open: bool = False) -> Rule:
    if hi_open:
        return Rule(lambda v: lo <= v < hi, f"be in [{lo}, {hi})")
    return Rule(lambda v: lo <= v <= hi, f"be in [{lo}, {hi}]")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"be one of {', '.join(choices)}")


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"{rule.must} (or null)")


def each(rule: Rule, non_empty: bool = True) -> Rule:
    what = "be a non-empty list" if non_empty else "be a list"
    return Rule(
        lambda v: (len(v) > 0 or not non_empty) and all(rule.ok(x) for x in v),
        f"{what}; each item must {rule.must}",
    )


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)
FRACTION = within(0, 1)
PROBABILITY = within(0, 1, hi_open=True)
SEED = within(0, SEED_MAX)
MASK_RATIO = within(0, 0.98)
NOT_EMPTY = Rule(lambda v: bool(str(v).strip()), "not be empty")
STEPS = Rule(lambda v: v == -1 or v >= 1, "be -1 (train for max_epochs) or >= 1")
DEVICES = Rule(
    lambda v: (
        (v == -1 or v >= 1)
        if isinstance(v, int)
        else bool(re.fullmatch(r"auto|-1|[1-9]\d*|\d+(,\d+)*,?", str(v).strip()))
    ),
    "be a count >= 1, -1 (all), 'auto' or a list of device ids like '0,1'",
)

#: class name -> {field: rule}. Options that the type alone does not make valid.
RULES: dict[str, dict[str, Rule]] = {
    "TrainerConfig": {
        "max_epochs": POSITIVE,
        "max_steps": STEPS,
        "precision": one_of(*PRECISIONS),
        "accelerator": one_of(*ACCELERATORS),
        "devices": DEVICES,
        "strategy": NOT_EMPTY,
        "num_nodes": POSITIVE,
        "accumulate_grad_batches": POSITIVE,
        "gradient_clip_val": optional(NON_NEGATIVE),
        "ckpt_every_n_steps": POSITIVE,
        "log_every_n_steps": POSITIVE,
        "seed": SEED,
        "attention": one_of(*ATTENTION_MODES),
    },
    "OptimConfig": {
        "base_lr": above(0),
        "weight_decay": NON_NEGATIVE,
        "betas": Rule(
            lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "be two values in [0, 1)"
        ),
        "warmup_fraction": FRACTION,
        "min_lr_fraction": FRACTION,
    },
    "DataConfig": {"seed": SEED},
    "BackboneConfig": {
        "arch": NOT_EMPTY,
        "img_size": POSITIVE,
        "patch_size": POSITIVE,
        "depth": optional(POSITIVE),
        "embed_dim": optional(POSITIVE),
        "num_heads": optional(POSITIVE),
        "mlp_ratio": optional(above(0)),
        "drop_path_rate": PROBABILITY,
    },
    "MAEConfig": {"decoder_mlp_ratio": above(0)},
    "TeacherConfig": {
        "weight": NON_NEGATIVE,
        "format": one_of(*WEIGHT_FORMATS),
        "name": optional(NOT_EMPTY),
    },
    "StudentConfig": {"format": one_of(*WEIGHT_FORMATS)},
    "CacheConfig": {
        "views": Rule(lambda v: v == "auto" or v >= 0, "be auto or >= 0 (0: no cache)"),
        "dtype": one_of("float16", "bfloat16", "float32"),
        "batch_size": optional(POSITIVE),
    },
    "KnnConfig": {
        "k": each(POSITIVE),
        "temperature": above(0),
        "batch_size": POSITIVE,
        "query_chunk": POSITIVE,
        "bank_chunk": optional(POSITIVE),
    },
    "LinearConfig": {
        "batch_size": POSITIVE,
        "epochs": POSITIVE,
        "train_batch_size": POSITIVE,
        "lr": above(0),
        "momentum": PROBABILITY,
        "weight_decay": NON_NEGATIVE,
        "warmup_epochs": NON_NEGATIVE,
    },
    "FinetuneConfig": {
        "batch_size": POSITIVE,
        "eval_batch_size": POSITIVE,
        "epochs": POSITIVE,
        "max_steps": optional(POSITIVE),
        "lr": above(0),
        "min_lr": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "layer_decay": within(0, 1),
        "drop_path": PROBABILITY,
        "warmup_epochs": NON_NEGATIVE,
        "mixup": NON_NEGATIVE,
        "cutmix": NON_NEGATIVE,
        "label_smoothing": PROBABILITY,
        "grad_clip": optional(above(0)),
    },
    "EvalRunConfig": {
        "backbone": NOT_EMPTY,
        "name": optional(NOT_EMPTY),
        "role": optional(one_of("baseline", "teacher", "student")),
        "seed": SEED,
    },
    "ExportConfig": {
        "format": one_of(*WEIGHT_FORMATS),
        "arch": optional(NOT_EMPTY),
        "out": Rule(lambda v: str(v).endswith(".safetensors"), "end in .safetensors"),
    },
    "ReportConfig": {"runs": each(NOT_EMPTY), "num_images": POSITIVE, "map_points": POSITIVE},
    "EmbedConfig": {
        "backbone": NOT_EMPTY,
        "batch_size": POSITIVE,
        "arch": optional(NOT_EMPTY),
        "device": optional(NOT_EMPTY),
    },
    "QuickstartConfig": {"precision": one_of(*PRECISIONS), "seed": SEED},
    "BenchConfig": {
        "threads": optional(POSITIVE),
        "jpeg_images": NON_NEGATIVE,
        "data_workers": NON_NEGATIVE,
        "matmul_size": POSITIVE,
        "mask_ratios": each(MASK_RATIO),
        "moma_mask_ratio": MASK_RATIO,
        "batch_sweep": optional(each(POSITIVE, non_empty=False)),
        "seed": SEED,
        "attention": one_of(*ATTENTION_MODES),
        "cache_build_batch": optional(POSITIVE),
    },
}

#: class name -> fields holding user paths (``~`` and ``$VARS`` expanded, empty refused).
PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "DataConfig": ("dataset", "root"),
    "TrainerConfig": ("out_dir", "resume"),
    "TeacherConfig": ("path",),
    "StudentConfig": ("init",),
    "CacheConfig": ("dir",),
    "KnnConfig": ("cache_dir",),
    "LinearConfig": ("cache_dir",),
    "EvalRunConfig": ("backbone", "out_dir"),
    "ExportConfig": ("checkpoint", "out"),
    "ReportConfig": ("runs", "out_dir"),
    "EmbedConfig": ("backbone", "out"),
    "QuickstartConfig": ("out", "data_root"),
    "BenchConfig": ("out_dir",),
}


# --------------------------------------------------------------- cross-field checks
def _check_backbone(cfg: Any, where: str) -> None:
    if cfg.embed_dim is not None and cfg.num_heads is not None and cfg.embed_dim % cfg.num_heads:
        raise ConfigError(
            f"{where}embed_dim ({cfg.embed_dim}) must be divisible by {where}num_heads "
            f"({cfg.num_heads})"
        )
    import timm

    if not timm.is_model(cfg.arch):
        raise ConfigError(f"{where}arch {cfg.arch!r} is not a timm model name")
    vits = {m for module in VIT_MODULES for m in timm.list_models(module=module)}
    if cfg.arch not in vits:
        raise ConfigError(f"{where}arch {cfg.arch!r} is not a timm VisionTransformer")


def _check_moma_run(cfg: Any, where: str) -> None:
    if not cfg.teachers:
        raise ConfigError(
            'teachers: MOMA needs at least one teacher: --teachers \'[{"path": "teacher.pth"}]\''
        )
    if sum(t.weight for t in cfg.teachers) <= 0:
        raise ConfigError("teachers: the teacher weights sum to 0; give one a weight > 0")
    _same_grid(cfg.data.img_size, cfg.student.backbone.patch_size, "student.backbone.patch_size")


def _check_pretrain_run(cfg: Any, where: str) -> None:
    if cfg.backbone.img_size != cfg.data.img_size:
        raise ConfigError(
            f"backbone.img_size ({cfg.backbone.img_size}) must equal data.img_size "
            f"({cfg.data.img_size}): the encoder sees the data's images"
        )
    _same_grid(cfg.data.img_size, cfg.backbone.patch_size, "backbone.patch_size")


def _same_grid(img_size: int, patch_size: int, option: str) -> None:
    if img_size % patch_size:
        raise ConfigError(
            f"data.img_size ({img_size}) must be a multiple of {option} ({patch_size})"
        )


def _check_finetune(cfg: Any, where: str) -> None:
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        raise ConfigError(
            f"{where}batch_size ({cfg.batch_size}) must be even with mixup/cutmix "
            "(samples are mixed in pairs)"
        )


def _check_finetune_run(cfg: Any, where: str) -> None:
    if cfg.backbone == "raw-pixels":
        raise ConfigError("backbone raw-pixels cannot be fine-tuned: fine-tuning needs a ViT")


def _check_eval(cfg: Any, where: str) -> None:
    if cfg.backbone == "random-init" and cfg.random_init.img_size != cfg.data.img_size:
        raise ConfigError(
            f"random_init.img_size ({cfg.random_init.img_size}) must equal data.img_size "
            f"({cfg.data.img_size}): the random-init baseline sees the data's images"
        )
    if cfg.device is None:
        return
    import torch

    try:
        dev = torch.device(cfg.device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"{where}device {cfg.device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{where}device {cfg.device!r}: no CUDA GPU is visible to torch")


def _method_check(cfg: Any, where: str) -> None:
    # The config class keeps its own rules (MAEConfig, MomaConfig, DataConfig, BenchConfig,
    # QuickstartConfig ...): this ground-level module never imports the floors they live on.
    cfg.check()


def _check_cache(cfg: Any, where: str) -> None:
    # Checked even when this run will not use the cache (cache.views auto on a short run):
    # a folder that can never be made is a wrong value, not a latent one.
    if cfg.dir is not None:
        output_folder(cfg.dir, f"{where}dir")


#: class name -> check of several fields together (after each field passed its own rules).
CLASS_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "DataConfig": _method_check,
    "BackboneConfig": _check_backbone,
    "MomaConfig": _method_check,
    "MAEConfig": _method_check,
    "MoCoV3Config": _method_check,
    "CacheConfig": _check_cache,
    "MomaRunConfig": _check_moma_run,
    "MAERunConfig": _check_pretrain_run,
    "MoCoV3RunConfig": _check_pretrain_run,
    "FinetuneConfig": _check_finetune,
    "EvalRunConfig": _check_eval,
    "FinetuneRunConfig": _check_finetune_run,
    "QuickstartConfig": _method_check,
    "BenchConfig": _method_check,
}


# ----------------------------------------------------------------------- the walk
def _table(table: dict[str, T], cls: type) -> list[T]:
    return [table[c.__name__] for c in cls.__mro__ if c.__name__ in table]


def _hints(cls: type) -> dict[str, Any]:
    module = importlib.import_module(cls.__module__)
    try:
        return typing.get_type_hints(cls, vars(module))
    except Exception:  # an annotation that cannot be resolved: its type is not checked
        return {}


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (None: it fits)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, TypeVar):
        return None
    if origin is typing.Literal:
        return None if value in args else f"be one of {', '.join(map(str, args))}"
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, a) for a in args]
        return None if None in problems else " or ".join(p for p in problems if p)
    if hint is type(None):
        return None if value is None else "be null"
    if hint is bool:
        return None if isinstance(value, bool) else "be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "be an integer"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "be a number"
        return None if math.isfinite(value) else "be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "be a string"
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return "be a list"
        item_hints = args[:1] if origin is list or (len(args) == 2 and args[1] is ...) else args
        if origin is tuple and len(item_hints) > 1 and len(value) != len(item_hints):
            return f"have {len(item_hints)} items"
        for i, item in enumerate(value):
            h = item_hints[min(i, len(item_hints) - 1)] if item_hints else Any
            problem = _type_problem(item, h)
            if problem:
                return f"hold items that {problem}"
        return None
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, hint) else f"be a {hint.__name__}"
    return None


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def validate(cfg: Any, where: str = "") -> None:
    """Check every value of the config dataclass ``cfg`` (and of the ones inside it).

    ``where`` is the option prefix of ``cfg`` (``"trainer."``). Raises `ConfigError` with a
    one-line message naming the first invalid option.
    """
    cls = type(cfg)
    hints = _hints(cls)
    rules: dict[str, Rule] = {}
    for table in reversed(_table(RULES, cls)):
        rules.update(table)
    for f in dataclasses.fields(cfg):
        value, option = getattr(cfg, f.name), f"{where}{f.name}"
        problem = _type_problem(value, hints[f.name]) if f.name in hints else None
        if problem:
            raise ConfigError(f"{option} must {problem}, got {_show(value)}")
        rule = rules.get(f.name)
        if rule is not None and not rule.ok(value):
            raise ConfigError(f"{option} must {rule.must}, got {_show(value)}")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, f"{option}.")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    validate(item, f"{option}[{i}].")
    for check in reversed(_table(CLASS_CHECKS, cls)):
        check(cfg, where)


def expand_paths(cfg: T, where: str = "") -> T:
    """A copy of ``cfg`` with the user paths of :data:`PATH_FIELDS` expanded (``~``, ``$VARS``),
    in nested configs too. Raises `ConfigError` for an empty path or an unset variable."""
    fields = {name for names in _table(PATH_FIELDS, type(cfg)) for name in names}
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value, option = getattr(cfg, f.name), f"{where}{f.name}"
        if f.name in fields and isinstance(value, str):
            changes[f.name] = user_path(value, option)
        elif f.name in fields and isinstance(value, list):
            changes[f.name] = [user_path(v, f"{option}[{i}]") for i, v in enumerate(value)]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = expand_paths(value, f"{option}.")
        elif isinstance(value, list) and any(dataclasses.is_dataclass(v) for v in value):
            changes[f.name] = [
                expand_paths(v, f"{option}[{i}].") if dataclasses.is_dataclass(v) else v
                for i, v in enumerate(value)
            ]
    return dataclasses.replace(cfg, **changes) if changes else cfg


def prepare_run(cfg: T) -> T:
    """What every run does first (the CLI through the ``run_*`` functions, and the Python API):
    user paths expanded, every value validated, every generator seeded with ``trainer.seed``.

    Returns the config to run (a copy when a path changed). Raises `ConfigError`.
    """
    cfg = expand_paths(cfg)
    validate(cfg)
    seed = getattr(getattr(cfg, "trainer", None), "seed", None)
    if seed is not None:
        seed_run(seed)  # before the run builds its models
    return cfg
