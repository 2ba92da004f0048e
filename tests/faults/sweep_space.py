"""The option space of the randomised CLI sweep (``test_cli_sweep.py``).

Every option of every subcommand has values that must work (``good``: small enough that a run
takes seconds), values that must be refused with one ``moma: error:`` line (``bad``), and
values whose outcome depends on the machine or on other options (``maybe``: a clean run or a
clean refusal, never a traceback). Values are command-line strings; ``{name}`` fields are
filled with the sweep's fixtures (``{fresh}`` a new folder, ``{file}`` a regular file,
``{fifo}`` a FIFO, ``{img}`` an image folder, ``{teacher}`` a tiny export, ``{run}`` a
finished run, ``{runs}`` a folder of runs). ``test_sweep_covers_every_option`` keeps this table
in step with the config dataclasses: a new option needs its entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Opt:
    """The values the sweep tries for one option."""

    good: tuple[str, ...]
    bad: tuple[str, ...] = ()
    maybe: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """A subcommand: the arguments of a quick valid run, and its options."""

    argv: tuple[str, ...]
    base: tuple[str, ...]
    options: dict[str, Opt] = field(default_factory=dict)


BOOL = Opt(("true", "false"), ("perhaps", "2"))
SEED = Opt(("0", "3"), ("-1", "4294967296", "x"))
NOT_A_FOLDER = ("{file}", "{file}/below", "")


def data(img_size: str) -> dict[str, Opt]:
    """DataConfig options (image folder; the image size fixed by the command)."""
    return {
        "data.dataset": Opt(("{img}",), ("", "{missing}", "{file}", "$MOMA_SWEEP_UNSET/x")),
        "data.root": Opt(("null", "{missing}")),  # Fashion-MNIST only: ignored for a folder
        "data.img_size": Opt((img_size,), ("0", "-3", "x", "1.5")),
        "data.batch_size": Opt(("4", "8"), ("0", "-1")),
        "data.num_workers": Opt(("0",), ("-1",), ("1",)),
        "data.in_memory": Opt(("true", "false", "null"), ("maybe",)),
        "data.strict": BOOL,
        "data.min_scale": Opt(("0.2", "1.0"), ("0", "1.5", "inf")),
        "data.subset": Opt(("null", "12"), ("0", "-4")),
        "data.seed": SEED,
        "data.decode": Opt(("auto", "workers", "pil"), ("gpu", ""), ("device",)),
        "data.num_samples": Opt(("null",), ("0", "-3")),
    }


def backbone(prefix: str, img_size: str) -> dict[str, Opt]:
    """BackboneConfig options under ``prefix`` (tiny sizes; ``img_size`` fixed)."""
    return {
        f"{prefix}.arch": Opt(
            ("vit_tiny_patch16_224", "vit_small_patch16_224"), ("nope", "resnet18", "")
        ),
        f"{prefix}.img_size": Opt((img_size,), ("0", "-16")),
        f"{prefix}.patch_size": Opt(("4", "8"), ("0", "-4")),
        f"{prefix}.depth": Opt(("1", "2"), ("0", "-1")),
        f"{prefix}.embed_dim": Opt(("32", "64"), ("0", "-32")),
        f"{prefix}.num_heads": Opt(("1", "2"), ("0", "3")),
        f"{prefix}.mlp_ratio": Opt(("2.0", "null"), ("0", "-1", "inf")),
        f"{prefix}.drop_path_rate": Opt(("0.0", "0.1"), ("1.0", "2", "-0.1")),
    }


TRAINER = {
    "trainer.out_dir": Opt(("{fresh}",), NOT_A_FOLDER),
    "trainer.max_epochs": Opt(("1", "3"), ("0", "-2")),
    "trainer.max_steps": Opt(("1", "2"), ("0", "-5", "x")),
    "trainer.precision": Opt(("32-true", "bf16-mixed", "32"), ("17", "half"), ("16-mixed",)),
    "trainer.accelerator": Opt(("cpu", "auto"), ("quantum",), ("gpu",)),
    "trainer.devices": Opt(("1", "auto"), ("0", "-2", "x")),
    "trainer.strategy": Opt(("auto",), ("nope", "")),
    "trainer.num_nodes": Opt(("1",), ("0",)),
    "trainer.accumulate_grad_batches": Opt(("1", "2"), ("0", "-1")),
    "trainer.gradient_clip_val": Opt(("null", "1.0"), ("-1", "inf")),
    "trainer.ckpt_every_n_steps": Opt(("1", "5"), ("0",)),
    "trainer.log_every_n_steps": Opt(("1", "10"), ("0",)),
    "trainer.seed": SEED,
    "trainer.resume": Opt(("auto", "never"), ("{missing}", "{fifo}", "{file}", "")),
    "trainer.allow_config_change": BOOL,
    "trainer.progress_bar": Opt(("false",), ("2x",)),
    "trainer.deterministic": Opt(("false",), ("x",), ("true",)),
    "trainer.attention": Opt(("auto", "math", "fused"), ("slow",)),
    "trainer.threads": Opt(("null", "1"), ("0", "-1", "x")),
    "trainer.compile": Opt(("none",), ("fast",), ("blocks", "blocks-nograph")),
}
OPTIM = {
    "optim.base_lr": Opt(("1e-4", "1e-3"), ("0", "-1", "inf", "nan")),
    "optim.weight_decay": Opt(("0", "0.05"), ("-0.1", "inf")),
    "optim.betas": Opt(("[0.9,0.95]", "[0.5,0.999]"), ("[2,0.5]", "[0.9]", "[0.9,0.95,0.99]")),
    "optim.warmup_fraction": Opt(("0", "0.1"), ("-0.1", "1.5")),
    "optim.min_lr_fraction": Opt(("0", "0.1"), ("2", "-1")),
}
TRAIN_BASE = ("--trainer.max_steps=2", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
              "--trainer.progress_bar=false", "--trainer.out_dir={fresh}", "--data.dataset={img}",
              "--data.batch_size=8")  # fmt: skip
TINY = ("depth=1", "embed_dim=32", "num_heads=2", "patch_size=4")

MAE = Command(
    ("pretrain", "mae"),
    (
        *TRAIN_BASE,
        "--data.img_size=16",
        "--backbone.img_size=16",
        *(f"--backbone.{kv}" for kv in TINY),
        "--mae.decoder_embed_dim=32",
        "--mae.decoder_depth=1",
        "--mae.decoder_num_heads=2",
    ),  # fmt: skip
    {
        **data("16"),
        **backbone("backbone", "16"),
        "mae.mask_ratio": Opt(("0.75", "0.5"), ("0.99", "-0.1", "nan")),
        "mae.decoder_embed_dim": Opt(("32", "16"), ("30", "0")),
        "mae.decoder_depth": Opt(("1",), ("0",)),
        "mae.decoder_num_heads": Opt(("1", "2"), ("0", "3")),
        "mae.decoder_mlp_ratio": Opt(("2.0",), ("0", "-1")),
        "mae.norm_pix_loss": BOOL,
        "mae.sincos_pos_embed": BOOL,
        **OPTIM,
        **TRAINER,
    },
)
MOCOV3 = Command(
    ("pretrain", "mocov3"),
    (
        *TRAIN_BASE,
        "--data.img_size=16",
        "--backbone.img_size=16",
        *(f"--backbone.{kv}" for kv in TINY),
        "--mocov3.proj_hidden_dim=32",
        "--mocov3.pred_hidden_dim=32",
        "--mocov3.proj_dim=16",
    ),  # fmt: skip
    {
        **data("16"),
        **backbone("backbone", "16"),
        "mocov3.temperature": Opt(("0.2", "1.0"), ("0", "-1")),
        "mocov3.momentum": Opt(("0.99", "0.9"), ("1.5", "-0.1")),
        "mocov3.proj_hidden_dim": Opt(("32",), ("0",)),
        "mocov3.proj_dim": Opt(("16",), ("0",)),
        "mocov3.pred_hidden_dim": Opt(("32",), ("0",)),
        "mocov3.freeze_patch_embed": BOOL,
        "mocov3.sincos_pos_embed": BOOL,
        "mocov3.sync_batchnorm": BOOL,
        **OPTIM,
        **TRAINER,
    },
)
DISTILL = Command(
    ("distill",),
    (
        *TRAIN_BASE,
        "--data.img_size=16",
        *(f"--student.backbone.{kv}" for kv in TINY),
        '--teachers=[{"path": "{teacher}", "name": "t"}]',
    ),  # fmt: skip
    {
        **data("16"),
        # one teacher, as JSON: the sweep fills its fields (see test_cli_sweep.teachers_arg)
        "teachers.path": Opt(("{teacher}",), ("{missing}", "{file}", "{fifo}", "/dev/zero", "")),
        "teachers.format": Opt(("auto", "moma"), ("onnx",), ("mae", "timm", "mocov3")),
        "teachers.arch": Opt(("null",), (), ("nope", "vit_tiny_patch16_224")),
        "teachers.weight": Opt(("1.0", "0.5"), ("-1", "1e400")),
        "teachers.name": Opt(("null", "t"), ("",)),
        "student.init": Opt(("random", "{teacher}"), ("{missing}", "{fifo}", "")),
        "student.format": Opt(("auto",), ("onnx",)),
        **backbone("student.backbone", "16"),
        "moma.mask_ratio": Opt(("0.75", "0.9", "0"), ("0.99", "1.5", "nan")),
        "moma.targets": Opt(("cls", "patch", "cls+patch"), ("all",)),
        "moma.target_norm": Opt(("layernorm", "l2", "none"), ("x",)),
        "moma.loss": Opt(("smooth_l1", "mse", "cosine"), ("l1",)),
        "moma.smooth_l1_beta": Opt(("1.0", "0.5"), ("0", "-1")),
        "moma.projector_layers": Opt(("1", "2"), ("-1",), ("0",)),
        "moma.projector_hidden_dim": Opt(("null", "16"), ("0",)),
        "moma.grid_mismatch": Opt(("resample",), ("x",), ("error",)),
        "cache.views": Opt(("auto", "0", "1", "2"), ("-1", "x", "1.5")),
        "cache.dir": Opt(("null", "{fresh}"), NOT_A_FOLDER),
        "cache.dtype": Opt(("float16", "bfloat16", "float32"), ("int8", "")),
        "cache.batch_size": Opt(("null", "5"), ("0", "-2")),
        **OPTIM,
        **TRAINER,
    },
)
EVAL = {
    "backbone": Opt(
        ("raw-pixels", "random-init", "{run}", "{export}"), ("", "{missing}", "{file}", "{fifo}")
    ),  # fmt: skip
    "name": Opt(("null", "m1", "a b"), ("",)),
    "role": Opt(("null", "baseline", "teacher", "student"), ("boss",)),
    "out_dir": Opt(("{fresh}",), NOT_A_FOLDER),
    **data("16"),
    **backbone("random_init", "16"),
    # another size than the backbone's: refused for a ViT, fine for raw pixels
    "data.img_size": Opt(("16",), ("0", "-3", "x", "1.5"), ("32",)),
    "random_init.img_size": Opt(("16",), ("0", "-16"), ("32",)),
    "arch": Opt(("null",), (), ("nope", "vit_tiny_patch16_224")),
    "seed": SEED,
    "device": Opt(("null", "cpu"), ("tpu9", ""), ("cuda",)),
}
EVAL_BASE = ("--data.dataset={img}", "--data.img_size=16", "--out_dir={fresh}",
             "--backbone=random-init", *(f"--random_init.{kv}" for kv in TINY),
             "--random_init.img_size=16")  # fmt: skip
FEATURES = {"features": ("cls", "mean"), "precision": ("32", "bf16")}


def protocol(name: str, extra: dict[str, Opt]) -> dict[str, Opt]:
    common = {
        f"{name}.features": Opt(FEATURES["features"], ("max",)),
        f"{name}.batch_size": Opt(("4", "512"), ("0", "-1")),
        f"{name}.precision": Opt(FEATURES["precision"], ("16",)),
    }
    return {**EVAL, **common, **{f"{name}.{k}": v for k, v in extra.items()}}


CACHE = {"cache_dir": Opt(("null", "{fresh}"), NOT_A_FOLDER), "use_cache": BOOL}
KNN = Command(
    ("eval", "knn"),
    (*EVAL_BASE, "--knn.k=[1]"),
    protocol(
        "knn",
        {
            "k": Opt(("[1]", "[1,3]", "[100]"), ("[0]", "[]", "[-1]", "3")),
            "temperature": Opt(("0.07", "1"), ("0", "-1", "nan")),
            "query_chunk": Opt(("2", "1024"), ("0",)),
            "bank_chunk": Opt(("null", "3"), ("0",)),
            "sim_dtype": Opt(("float64", "float32"), ("float16",)),
            **CACHE,
        },
    ),
)
LINEAR = Command(
    ("eval", "linear"),
    (*EVAL_BASE, "--linear.epochs=2"),
    protocol(
        "linear",
        {
            "epochs": Opt(("1", "2"), ("0", "-1")),
            "train_batch_size": Opt(("4", "256"), ("0",)),
            "lr": Opt(("0.1",), ("0", "-1", "inf")),
            "momentum": Opt(("0.9", "0"), ("1", "-0.5")),
            "weight_decay": Opt(("0",), ("-1",)),
            "warmup_epochs": Opt(("0", "1", "5"), ("-1",)),
            **CACHE,
        },
    ),
)
FINETUNE = Command(
    ("eval", "finetune"),
    (*EVAL_BASE, "--finetune.epochs=1", "--finetune.max_steps=2", "--finetune.batch_size=4"),
    {
        **protocol(
            "finetune",
            {
                "batch_size": Opt(("4", "8"), ("0", "3")),  # even: mixup pairs samples
                "eval_batch_size": Opt(("8",), ("0",)),
                "epochs": Opt(("1",), ("0",)),
                "max_steps": Opt(("null", "2"), ("0",)),
                "lr": Opt(("1e-3",), ("0", "-1")),
                "min_lr": Opt(("1e-6", "0"), ("-1",)),
                "weight_decay": Opt(("0.05",), ("-1",)),
                "layer_decay": Opt(("0.75", "1.0"), ("1.5", "-0.1")),
                "drop_path": Opt(("0.1", "0"), ("1", "2")),
                "warmup_epochs": Opt(("0", "0.5"), ("-1",)),
                "mixup": Opt(("0", "0.8"), ("-1",)),
                "cutmix": Opt(("0", "1.0"), ("-1",)),
                "label_smoothing": Opt(("0", "0.1"), ("1", "-0.1")),
                "hflip": BOOL,
                "grad_clip": Opt(("null", "1.0"), ("0", "-1")),
            },
        ),
        # raw pixels have nothing to fine-tune
        "backbone": Opt(
            ("random-init", "{run}", "{export}"),
            ("raw-pixels", "", "{missing}", "{file}", "{fifo}"),
        ),  # fmt: skip
    },
)


EXPORT = Command(
    ("export",),
    ("--checkpoint={run}", "--out={fresh}/b.safetensors"),
    {
        "checkpoint": Opt(
            ("{run}", "{run}/checkpoints/last.ckpt", "{export}"),
            ("", "{missing}", "{file}", "{fifo}", "/dev/zero"),
        ),  # fmt: skip
        "out": Opt(
            ("{fresh}/b.safetensors",), ("{fresh}", "{fresh}/b.pt", "{file}/b.safetensors", "")
        ),  # fmt: skip
        "format": Opt(("auto", "moma"), ("onnx",), ("mae", "mocov3", "timm")),
        "arch": Opt(("null",), ("",), ("vit_tiny_patch16_224", "nope")),
        "trust_pickle": BOOL,
    },
)
REPORT = Command(
    ("report",),
    (
        "--runs=[{runs}]",
        "--out_dir={fresh}",
        "--attention=false",
        "--data.dataset={img}",
        "--data.img_size=16",
    ),  # fmt: skip
    {
        "runs": Opt(("[{runs}]", "[{run}]"), ("[]", "[{missing}]", "[{file}]")),
        "out_dir": Opt(("{fresh}",), NOT_A_FOLDER),
        "title": Opt(("r", "a b"), ()),
        "attention": Opt(("false",), ("x",), ("true",)),
        # the data is only read for attention maps: a bad path or value may pass unread
        **{k: Opt(v.good, (), v.bad + v.maybe) for k, v in data("16").items()},
        "num_images": Opt(("1", "2"), ("0", "-1")),
        "feature_map": Opt(("false",), ("x",), ("true",)),
        "map_points": Opt(("5", "2000"), ("0", "-1")),
    },
)
QUICKSTART = Command(
    ("quickstart",),
    ("--budget=smoke", "--out={fresh}", "--stages=[report]", "--progress_bar=false"),
    {
        "budget": Opt(("smoke",), ("huge",)),
        "out": Opt(("{fresh}",), NOT_A_FOLDER),
        "precision": Opt(("32-true", "bf16-mixed"), ("half",)),
        "seed": SEED,
        "data_root": Opt(("null",), ("",), ("{missing}",)),
        "progress_bar": Opt(("false",), ("x",)),
        "stages": Opt(("[report]",), ("[nope]",)),
    },
)
BENCH = Command(
    ("bench",),
    (
        "--sizes=tiny",
        "--precision=fp32",
        "--steps=1",
        "--warmup=0",
        "--groups=[teacher]",
        "--jpeg_images=0",
        "--matmul_size=64",
        "--batch_sweep=[]",
        "--out_dir={fresh}",
    ),  # fmt: skip
    {
        "sizes": Opt(("tiny",), ("huge", "")),
        "precision": Opt(("fp32",), ("fp64",), ("bf16",)),
        "batch_size": Opt(("null", "4"), ("0",)),
        "steps": Opt(("1",), ("0",)),
        "warmup": Opt(("0", "1"), ("-1",)),
        "out_dir": Opt(("{fresh}",), NOT_A_FOLDER),
        "device": Opt(("cpu",), ("tpu",), ("cuda", "auto")),
        "threads": Opt(("null", "1"), ("0",)),
        "mask_ratios": Opt(("[0.75]",), ("[1.5]", "[]")),
        "moma_mask_ratio": Opt(("0.9",), ("0.99",)),
        "batch_sweep": Opt(("[]",), ("[0]",)),
        "groups": Opt(("[teacher]", "[student]"), ("[nope]",)),
        "jpeg_images": Opt(("0",), ("-1",)),
        "data_workers": Opt(("0",), ("-1",)),
        "matmul_size": Opt(("64",), ("0",)),
        "seed": SEED,
        "attention": Opt(("auto", "math"), ("slow",)),
        "cache_build_batch": Opt(("null", "4"), ("0", "-1")),
        "compile": Opt(("blocks",), ("fast",), ("blocks-nograph", "none")),
        "compile_backend": Opt(("inductor",), (), ("aot_eager", "nope")),
    },
)
EMBED = Command(
    ("embed",),
    (
        "--backbone={export}",
        "--data.dataset={img}",
        "--data.img_size=16",
        "--out={fresh}/e.npy",
        "--progress_bar=false",
    ),
    {
        "backbone": Opt(
            ("{run}", "{export}"),
            ("", "{missing}", "{file}", "{fifo}"),
            ("raw-pixels", "random-init"),
        ),
        "out": Opt(("{fresh}/e.npy",), ("{fresh}/e.csv", "{file}/e.npy", "")),
        **data("16"),
        "split": Opt(("all", "train"), ("dev",), ("val", "test")),
        "features": Opt(("cls", "mean"), ("max",)),
        "batch_size": Opt(("4", "512"), ("0", "-1")),
        "precision": Opt(("32", "bf16"), ("16",)),
        "arch": Opt(("null",), ("",), ("vit_tiny_patch16_224", "nope")),
        "device": Opt(("null", "cpu"), ("",), ("cuda", "tpu9")),
        "overwrite": BOOL,
        "progress_bar": Opt(("false",), ("x",)),
    },
)
COMMANDS = {
    " ".join(c.argv): c
    for c in (
        MAE,
        MOCOV3,
        DISTILL,
        KNN,
        LINEAR,
        FINETUNE,
        EXPORT,
        REPORT,
        QUICKSTART,
        BENCH,
        EMBED,
    )  # fmt: skip
}
