"""One call per job from Python: ``moma.distill``, ``moma.pretrain``, ``moma.embed``.

Each is a thin wrapper over the command-line subcommand of the same name: the arguments and
``**overrides`` are parsed by the same parser into the same config dataclass, so a value is
checked and resolved exactly as ``--key value`` would be, and the run is the CLI's. Overrides
are dotted keys (``**{"moma.mask_ratio": 0.75}``) or nested dicts (``moma={"mask_ratio":
0.75}``); ``config=`` is a YAML file, as ``--config``, that the other arguments override
option by option (a list, such as ``teachers``, replaces the file's). Invalid values raise
:class:`~moma.errors.ConfigError` with the parser's message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from moma.errors import ConfigError

if TYPE_CHECKING:
    from moma.eval.embed import EmbedResult
    from moma.train import RunResult

PathLike = str | os.PathLike


def _flatten(key: str, value: Any, out: dict[str, Any]) -> None:
    """Nested dicts as dotted keys (``{"moma": {"mask_ratio": 1}}`` -> ``moma.mask_ratio``), so
    each sets one option and leaves the group's others as the config file has them."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{key}.{k}" if key else str(k), v, out)
    else:
        out[key] = value


def _options(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The named arguments with ``overrides`` on top, as dotted keys (``None`` = not set)."""
    from moma.commands.record import plain  # lazy: `import moma` must not import torch

    out: dict[str, Any] = {}
    for source in (values, overrides):
        for key, value in source.items():
            if value is not None:
                _flatten(key, plain(value), out)
    return out


def run_command(
    command: tuple[str, ...], values: dict[str, Any], config: PathLike | None = None
) -> Any:
    """Parse ``values`` (dotted keys) as ``moma COMMAND`` would and run it; returns its result."""
    from moma.cli.main import (  # lazy: as above
        command_parser,
        parse_error_message,
        resolve_command,
        to_config,
    )

    cfg_cls, run = resolve_command(command)
    parser = command_parser(cfg_cls, "moma " + " ".join(command), "")
    # the config file first: the values after it override it, as on the command line
    obj = {"config": os.fspath(config), **values} if config is not None else dict(values)
    try:
        ns = parser.parse_object(obj)
    except Exception as e:  # jsonargparse.ArgumentError: unknown key, bad type, missing value
        raise ConfigError(f"moma.{command[0]}: {parse_error_message(e, [])}") from None
    cfg = to_config(cfg_cls, parser, ns)
    return run(cfg)  # validates, expands paths and seeds first (moma.validation)


def _teachers(teachers: Sequence[Any] | None) -> list | None:
    if teachers is None:
        return None
    if isinstance(teachers, str | os.PathLike | dict):
        teachers = [teachers]
    return [{"path": t} if isinstance(t, str | os.PathLike) else t for t in teachers]


def _data(data: Any) -> Any:
    return {"dataset": data} if isinstance(data, str | os.PathLike) else data


def distill(
    out: PathLike | None = None,
    data: PathLike | dict | Any = None,
    teachers: Sequence[PathLike | dict | Any] | None = None,
    student: PathLike | dict | Any = None,
    config: PathLike | None = None,
    **overrides: Any,
) -> RunResult:
    """MOMA distillation, as ``moma distill``; returns the run's :class:`~moma.train.RunResult`.

    Args:
        out: the run folder (``trainer.out_dir``); re-running the same call resumes it.
        data: ``"fashion_mnist"``, an image folder, or ``data`` options (dict / ``DataConfig``).
        teachers: weights files (any format ``load_backbone`` reads) or teacher options
            (dicts / ``TeacherConfig``: ``path``, ``name``, ``weight``, ``format``, ``arch``).
        student: ``"random"`` or a weights file to start from (``student.init``), or student
            options (dict / ``StudentConfig``, e.g. ``{"backbone": {"depth": 4}}``).
        config: a YAML config file (as ``--config``); the other arguments override it.
        overrides: any other option, dotted (``**{"moma.mask_ratio": 0.75}``) or nested
            (``trainer={"max_steps": 200}``).

    The student is exported to ``OUT/backbone.safetensors`` (``result.export``).
    """
    values = {
        "trainer.out_dir": out,
        "data": _data(data),
        "teachers": _teachers(teachers),
        "student": {"init": student} if isinstance(student, str | os.PathLike) else student,
    }
    return run_command(("distill",), _options(values, overrides), config)


def pretrain(
    method: str,
    out: PathLike | None = None,
    data: PathLike | dict | Any = None,
    backbone: str | dict | Any = None,
    config: PathLike | None = None,
    **overrides: Any,
) -> RunResult:
    """Pre-train a teacher, as ``moma pretrain mae|mocov3``; returns the run's result.

    Args:
        method: ``"mae"`` or ``"mocov3"``.
        out: the run folder (``trainer.out_dir``); re-running the same call resumes it.
        data: ``"fashion_mnist"``, an image folder, or ``data`` options.
        backbone: a timm architecture name (``backbone.arch``) or backbone options (dict /
            ``BackboneConfig``).
        config: a YAML config file (as ``--config``); the other arguments override it.
        overrides: any other option, dotted or nested (see :func:`distill`).
    """
    if method not in ("mae", "mocov3"):
        raise ConfigError(f"moma.pretrain: method must be 'mae' or 'mocov3', got {method!r}")
    values = {
        "trainer.out_dir": out,
        "data": _data(data),
        "backbone": {"arch": backbone} if isinstance(backbone, str) else backbone,
    }
    return run_command(("pretrain", method), _options(values, overrides), config)


def embed(
    backbone: PathLike,
    data: PathLike | dict | Any,
    out: PathLike,
    config: PathLike | None = None,
    **overrides: Any,
) -> EmbedResult:
    """Embeddings of every image, as ``moma embed``; returns where they are and their shape.

    Args:
        backbone: a weights file or a run folder (its ``backbone.safetensors``).
        data: ``"fashion_mnist"``, an image folder, or ``data`` options.
        out: the ``.npy`` to write; ``.csv`` (file names / labels) and ``.json`` go next to it.
        config: a YAML config file (as ``--config``); the other arguments override it.
        overrides: ``split``, ``features``, ``batch_size``, ``precision``, ... (see
            ``moma embed --help``), dotted or nested.

    Load the result with ``np.load(out)`` and ``pd.read_csv(result.table)``.
    """
    values = {"backbone": backbone, "data": _data(data), "out": out}
    return run_command(("embed",), _options(values, overrides), config)
