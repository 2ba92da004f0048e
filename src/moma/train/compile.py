"""``--trainer.compile``: compile the transformer blocks of every ViT in a run, in place.

Why: on a GPU the small ViTs of this project are bound by the host, not the device: a student
step issues about 3,500 aten ops and takes 14-30 ms whatever its batch or mask ratio
(BENCHMARKS.md, "GPU"). A block's shapes never change during a run (the batch size is fixed,
and so is the token count: the mask ratio sets it), so each block can be compiled once:
inductor fuses its element-wise ops, and on a GPU ``mode="reduce-overhead"`` replays it as a
CUDA graph, one launch instead of dozens.

Why blocks and in place: ``nn.Module.compile()`` keeps the module, its parameters and its
``state_dict`` keys as they are (no ``_orig_mod.`` prefix), so checkpoints, resume, the
exported backbone and the momentum/EMA updates are unchanged; the code around the blocks
(masking, heads, losses, the optimiser) stays eager, so nothing method-specific is traced.
Blocks of the same shape share one compiled graph (torch inlines module parameters as inputs).

Modes: ``none``; ``blocks`` (inductor; CUDA graphs on a GPU); ``blocks-nograph`` (inductor
without CUDA graphs, e.g. when their memory pools do not fit).
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from timm.models.vision_transformer import Block
from torch import nn

from moma.errors import ConfigError

log = logging.getLogger(__name__)

COMPILE_MODES = ("none", "blocks", "blocks-nograph")
# Blocks differ in width (teachers vs student), token count (masked student vs full-view
# teachers, MAE decoder) and grad mode: each is one compiled entry of Block.forward.
_CACHE_ENTRIES = 64


def check_compile(mode: str) -> None:
    """Refuse an unknown ``trainer.compile`` value, naming the option."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile must be one of {list(COMPILE_MODES)}, got {mode!r}")


def compile_options(mode: str, device: torch.device | str, backend: str = "inductor") -> dict:
    """The ``torch.compile`` keyword arguments for ``mode`` on ``device``."""
    opts: dict = {"backend": backend, "dynamic": False}
    if backend == "inductor":
        graphs = mode == "blocks" and torch.device(device).type == "cuda"
        opts["mode"] = "reduce-overhead" if graphs else "default"
    return opts


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """Every timm ViT block inside ``module`` (students, teachers, MAE decoder, momentum
    encoders)."""
    return [m for m in module.modules() if isinstance(m, Block)]


def compile_blocks(
    module: nn.Module, device: torch.device | str, mode: str = "blocks", backend: str = "inductor"
) -> int:
    """Compile every transformer block of ``module`` in place; returns how many.

    Compilation itself happens at each block's first call. ``backend`` is torch.compile's
    (tests use the cheap ``aot_eager``).
    """
    check_compile(mode)
    if mode == "none":
        return 0
    blocks = transformer_blocks(module)
    opts = compile_options(mode, device, backend)
    limit = torch._dynamo.config.cache_size_limit
    torch._dynamo.config.cache_size_limit = max(limit, _CACHE_ENTRIES)
    for block in blocks:
        block.compile(**opts)
    log.info("compiled %d transformer blocks (%s)", len(blocks), opts)
    return len(blocks)


def uncompile_blocks(module: nn.Module) -> None:
    """Undo `compile_blocks`: the blocks run eagerly again (``nn.Module.compile`` has no
    public inverse; it sets ``_compiled_call_impl``)."""
    for block in transformer_blocks(module):
        if getattr(block, "_compiled_call_impl", None) is not None:
            block._compiled_call_impl = None


class CompileBlocks(L.Callback):
    """Compiles the blocks once the module is on its device; undoes it when the run ends
    (so a module trained through the Python API is plain again afterwards)."""

    def __init__(self, mode: str) -> None:
        check_compile(mode)
        self.mode = mode
        self._graphs = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        compile_blocks(pl_module, pl_module.device, self.mode)
        self._graphs = compile_options(self.mode, pl_module.device).get("mode") == "reduce-overhead"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._graphs:  # a new step: the CUDA graphs may reuse the last step's buffers
            torch.compiler.cudagraph_mark_step_begin()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.mode != "none":
            uncompile_blocks(pl_module)
