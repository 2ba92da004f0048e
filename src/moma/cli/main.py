"""``moma``: one console script, subcommands built from the config dataclasses.

Every subcommand takes ``--config file.yaml`` plus dotted overrides
(``--optim.base_lr 1e-3``) and ``--print-config`` prints the resolved config and exits.
The Python API takes the same config objects: ``run_fn(ConfigClass(...))``.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import logging
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from moma import __version__
from moma.errors import ConfigError, MomaError
from moma.moved import forwarder
from moma.paths import regular_file, user_path
from moma.threads import configure_openmp
from moma.validation import expand_paths, validate

__getattr__ = forwarder(__name__)  # config_to_dict moved to moma.commands.record

# OS errors a user's environment or paths cause: printed as one line, never as a traceback
# (a last resort: options name themselves where moma checks them first).
_USER_OS_ERRORS = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,  # disk, permissions
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,  # paths
}  # fmt: skip

# subcommand path -> (command module, config class, run function, help); the modules are
# imported when the parser is built (moma.commands: one module per command)
COMMANDS: dict[tuple[str, ...], tuple[str, str, str, str]] = {
    ("pretrain", "mae"): (
        "moma.commands.pretrain",
        "MAERunConfig",
        "run_mae",
        "pre-train an MAE teacher",
    ),
    ("pretrain", "mocov3"): (
        "moma.commands.pretrain",
        "MoCoV3RunConfig",
        "run_mocov3",
        "pre-train a MoCo v3 teacher",
    ),
    ("distill",): ("moma.commands.distill", "MomaRunConfig", "run_moma", "MOMA distillation"),
    ("eval", "knn"): (
        "moma.commands.evaluate",
        "KnnRunConfig",
        "run_knn",
        "weighted kNN on frozen features",
    ),
    ("eval", "linear"): ("moma.commands.evaluate", "LinearRunConfig", "run_linear", "linear probe"),
    ("eval", "finetune"): (
        "moma.commands.evaluate",
        "FinetuneRunConfig",
        "run_finetune",
        "full fine-tuning",
    ),
    ("embed",): (
        "moma.commands.embed",
        "EmbedConfig",
        "run_embed",
        "embeddings of every image (.npy + .csv)",
    ),
    ("export",): (
        "moma.commands.export",
        "ExportConfig",
        "run_export",
        "write a timm-loadable backbone",
    ),
    ("report",): (
        "moma.commands.report",
        "ReportConfig",
        "run_report",
        "table + plots from results",
    ),
    ("quickstart",): (
        "moma.commands.quickstart",
        "QuickstartConfig",
        "run_quickstart",
        "the whole comparison",
    ),
    ("bench",): (
        "moma.commands.bench",
        "BenchConfig",
        "run_bench",
        "throughput and FLOP/s benchmark",
    ),
}


def resolve_command(path: tuple[str, ...]) -> tuple[type, Callable[[Any], Any]]:
    """The config class and run function of ``moma PATH`` (imports its command module)."""
    mod_name, cfg_name, fn_name, _ = COMMANDS[path]
    mod = importlib.import_module(mod_name)
    return getattr(mod, cfg_name), getattr(mod, fn_name)


def command_parser(cfg_cls: type, prog: str, description: str):
    """A jsonargparse parser for one config dataclass (``--config``, dotted overrides)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_class_arguments(cfg_cls, as_group=False)
    return parser


def build_parser():
    """The top-level parser with all subcommands."""
    from jsonargparse import ArgumentParser

    root = ArgumentParser(
        prog="moma",
        description="MOMA: distil MoCo v3 and MAE teachers into a masked student ViT.",
        exit_on_error=False,
    )
    root.add_argument("--version", action="version", version=_version())
    root.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subs = root.add_subcommands(dest="command", required=True)
    groups: dict[str, Any] = {}
    for path, (_, _, _, help_) in COMMANDS.items():
        cfg_cls, _ = resolve_command(path)
        prog = "moma " + " ".join(path)
        parser = command_parser(cfg_cls, prog, help_)
        if len(path) == 1:
            subs.add_subcommand(path[0], parser, help=help_)
            continue
        if path[0] not in groups:
            group = ArgumentParser(prog=f"moma {path[0]}", exit_on_error=False)
            # jsonargparse: a parser must join its parent before it gets subcommands itself
            subs.add_subcommand(path[0], group, help=f"{path[0]} subcommands")
            groups[path[0]] = (group, group.add_subcommands(dest="command", required=True))
        groups[path[0]][1].add_subcommand(path[1], parser, help=help_)
    return root


def _version() -> str:

    return f"moma {__version__}"


def _selected(ns) -> tuple[tuple[str, ...], Any]:
    path: list[str] = []
    node = ns
    while "command" in node and node.command is not None:
        path.append(node.command)
        node = node[node.command]
    return tuple(path), node


def to_config(cfg_cls: type, parser, sub_ns) -> Any:
    """Turn a parsed namespace into the config dataclass the Python API takes."""
    ns = parser.instantiate(sub_ns) if hasattr(parser, "instantiate") else sub_ns
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    return cfg_cls(**{k: v for k, v in vars(ns).items() if k in fields})


def parse_error_message(err: BaseException, argv: list[str]) -> str:
    """A jsonargparse error as one line; an unknown key found in a ``--config`` file names it."""
    text = " ".join(str(err).split()) or "invalid arguments"
    m = re.search(r"does not accept option '([^']+)'", text)
    if m:
        files = [f for f in _config_files(argv) if _has_key(f, m.group(1))]
        if files:
            return f"{files[-1]}: unknown option '{m.group(1)}' ({text})"
    return text


def check_config_file(path: str) -> None:
    """Refuse a ``--config`` file that is not a YAML mapping of options, naming it: missing,
    not a regular file (a FIFO or a device would block the reader), empty, or not a mapping."""
    import yaml

    text = regular_file(path, ConfigError, "config file").read_text(errors="replace")
    try:
        node = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if node is None:
        raise ConfigError(f"{path}: the config file is empty (expected a mapping of options)")
    if not isinstance(node, dict):
        raise ConfigError(
            f"{path}: the config file holds a {type(node).__name__}, not a mapping of options"
        )


def _config_args(argv: list[str]) -> list[tuple[int, str, str]]:
    """``(index, prefix, path)`` of each ``--config`` path in ``argv`` (prefix ``--config=``
    when joined to the option, else empty)."""
    found = []
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            found.append((i + 1, "", argv[i + 1]))
        elif a.startswith("--config="):
            found.append((i, "--config=", a.split("=", 1)[1]))
    return found


def _expand_config_paths(argv: list[str]) -> list[str]:
    """``argv`` with ``~`` and ``$VARS`` expanded in ``--config`` paths, as in every other path."""
    out = list(argv)
    for i, prefix, path in _config_args(argv):
        out[i] = prefix + user_path(path, "--config")
    return out


def _config_files(argv: list[str]) -> list[str]:
    return [path for _, _, path in _config_args(argv)]


def _has_key(path: str, dotted: str) -> bool:
    """Whether the YAML file ``path`` holds the dotted key (flat or nested)."""
    import yaml

    try:
        with open(path) as f:
            node = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False
    if isinstance(node, dict) and dotted in node:
        return True
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``moma`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if ("-v" in argv or "--verbose" in argv) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if "-v" not in argv and "--verbose" not in argv:
        # Lightning's start-up banner (accelerator lines, advertising tips) is noise here.
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    if not {"-h", "--help", "--version", "--print-config"} & set(argv):
        configure_openmp()  # before anything imports torch: libgomp reads it once
    try:
        argv = _expand_config_paths(argv)
        for path in _config_files(argv):
            check_config_file(path)
        parser = build_parser()
        try:
            ns = parser.parse_args(argv)
        except Exception as e:  # jsonargparse.ArgumentError: unknown key, bad type ...
            raise MomaError(parse_error_message(e, argv)) from None
        path, sub_ns = _selected(ns)
        cfg_cls, run = resolve_command(path)
        sub_parser = command_parser(cfg_cls, "moma " + " ".join(path), "")
        if sub_ns.get("print_config"):
            # a config that a run would refuse is refused here too, not printed as if valid
            validate(expand_paths(to_config(cfg_cls, sub_parser, sub_ns)))
            clean = sub_ns.clone()
            for k in ("config", "print_config"):
                clean.pop(k, None)
            sys.stdout.write(sub_parser.dump(clean, skip_validation=True))
            return 0
        cfg = to_config(cfg_cls, sub_parser, sub_ns)
        result = run(cfg)  # validates, expands paths and seeds first (moma.validation)
        sig = getattr(result, "stop_signal", None)
        if sig:  # a training run stopped on SIGTERM/SIGINT after saving its checkpoint
            name = signal.Signals(sig).name
            sys.stderr.write(
                f"moma: stopped by {name} at step {result.global_step}; checkpoint "
                f"{result.checkpoint} saved; re-run the same command to resume\n"
            )
            return 128 + int(sig)
        return 0
    except MomaError as e:
        sys.stderr.write(f"moma: error: {e}\n")
        return 2
    except OSError as e:
        if e.errno not in _USER_OS_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"moma: error: {where}{e.strerror or e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("moma: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
