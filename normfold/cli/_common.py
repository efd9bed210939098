"""Arguments, model loading and output paths shared by the subcommands.

Every subcommand follows one order: arguments (argparse types below), then
``check_paths`` (every file it will write, against every file it reads),
then the model, then the work. A bad argument or input raises UsageError;
``main`` turns it into one line on stderr and exit code 2, before anything
is written.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from .._messages import first_line, is_out_of_memory, plain
from ..atomic import same_file, write_text, written_in_place

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_SHAPE = (1, 3, 224, 224)  # for a file model without --input-shape
MAX_SEED = 2**64 - 1             # torch.Generator.manual_seed's range (numpy takes any non-negative int)

T = TypeVar("T")


class UsageError(Exception):
    """Bad input or environment: exit 2 with this message."""


# ---- argument types (argparse turns their ArgumentTypeError into a usage line, exit 2) ------------

def positive_ints(text: str, what: str = "comma-separated positive integers", separators: str = ",") -> tuple[int, ...]:
    """``"1,3"`` -> ``(1, 3)``; anything else, an empty field included, is an argparse
    error quoting ``text`` and saying ``what`` was expected."""
    try:
        values = tuple(int(p) for p in re.split(f"[{re.escape(separators)}]", text))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def positive_int(text: str) -> int:
    """``"4"`` -> ``4``; one value only (``"4,8"`` is an argparse error, not 4)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_shape(text: str) -> tuple[int, ...]:
    """An input shape, ``1,3,224,224`` or ``1x3x224x224``."""
    return positive_ints(text, "an input shape of positive integers, e.g. 1,3,224,224", separators=",x")


def named_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """``image=1,3,640,640`` -> ``("image", (1, 3, 640, 640))``; an unnamed ``1,3,64,64`` -> ``(None, ...)``."""
    name, named, dims = text.rpartition("=")
    if named and not name:
        raise argparse.ArgumentTypeError(f"expected NAME=N,C,H,W (an input's name before '='), got {text!r}")
    return (name if named else None), parse_shape(dims)


class _InputShapes(argparse.Action):
    """--input-shape, repeatable: one unnamed shape (a one-input model) into ``input_shape``, or one
    NAME=shape per input into ``named_shapes``; a mix, or a name given twice, is a usage error."""

    def __call__(self, parser, namespace, value, option_string=None):
        name, shape = value
        named = dict(namespace.named_shapes)
        if namespace.input_shape is not None or (name is None and named):
            raise argparse.ArgumentError(self, "give one unnamed N,C,H,W (a model with one input) or NAME=N,C,H,W "
                                               "per input, not both or twice")
        if name in named:
            raise argparse.ArgumentError(self, f"input {name!r} is given twice")
        if name is None:
            namespace.input_shape = shape
        else:
            named[name] = shape
        namespace.named_shapes = named


def seed(text: str) -> int:
    """A seed for torch and numpy generators: an integer in [0, 2**64)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**64-1, got {text!r}")
    return value


def finite_floats(text: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> floats; one value or more, each a finite number."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


def positive_floats(text: str) -> tuple[float, ...]:
    """Like ``finite_floats``, each above 0 (a standard deviation, a divisor)."""
    try:
        values = finite_floats(text)
    except argparse.ArgumentTypeError:
        values = ()
    if not values or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive finite numbers, got {text!r}")
    return values


def add_model_arguments(parser: argparse.ArgumentParser, *, named_shapes: bool = False) -> None:
    """MODEL, --input-shape and --seed; with ``named_shapes``, --input-shape NAME=N,C,H,W per input of an
    .onnx MODEL too (``args.named_shapes``: {name: shape})."""
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="a zoo name (see `normfold zoo`), path/to/file.py:factory, or an .onnx file; "
             "default: the bundled default model",
    )
    if named_shapes:
        parser.set_defaults(named_shapes={})
        parser.add_argument("--input-shape", type=named_shape, action=_InputShapes, default=None,
                            metavar="[NAME=]N,C,H,W",
                            help="example input shape (default: the zoo model's, an .onnx file's own, or "
                                 "1,3,224,224); for an .onnx file with several inputs, NAME=shape per input "
                                 "with symbolic dims (repeat the flag)")
    else:
        parser.add_argument("--input-shape", type=parse_shape, default=None, metavar="N,C,H,W",
                            help="example input shape (default: the zoo model's, an .onnx file's own, or "
                                 "1,3,224,224)")
    parser.add_argument("--seed", type=seed, default=0, help="seed for the example input (default 0)")


# ---- files read and written ----------------------------------------------------------------------

def model_file(spec: str | None) -> Path | None:
    """The file a MODEL argument reads: an .onnx file, or the .py of path/to/file.py:factory; None for a zoo name."""
    if spec is None:
        return None
    if is_onnx(spec):
        return Path(spec)
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        return Path(spec.rsplit(":", 1)[0])
    return None


@dataclass(frozen=True)
class Output:
    """A file a command will write: ``label`` names it in messages (the flag and the path the user gave)."""
    label: str
    path: Path
    new_dirs: bool = False   # its directory may be created (--out)


def output(flag: str, path: str | os.PathLike | None) -> list[Output]:
    """The file ``flag PATH`` writes ([] when the flag is not given)."""
    return [] if path is None else [Output(f"{flag} {path}", Path(path))]


def outputs_in(flag: str, directory: str | os.PathLike | None, names: Iterable[str], *,
               new_dirs: bool = False) -> list[Output]:
    """The files ``flag DIR`` writes into DIR."""
    if directory is None:
        return []
    return [Output(f"{flag} {directory} ({n})", Path(directory) / n, new_dirs) for n in names]


def check_paths(outputs: Iterable[Output], inputs: Iterable[tuple[str, str | os.PathLike | None]]) -> None:
    """Before any work: every output can be written and is neither an input nor another output.

    ``inputs``: (what, path) of every file the command reads (the model file,
    ONNX files, --inputs); None entries are skipped. Paths are compared after
    resolving symlinks (and hard links to the same file count as the same).
    Refused, naming the flag and path: a directory, a missing or unwritable
    directory (probed by creating a file there), an existing file without write
    permission, an output that is one of the inputs or another output.
    """
    ins = [(what, Path(p)) for what, p in inputs if p is not None]
    seen: dict[Path, str] = {}
    probed: set[Path] = set()
    for out in outputs:
        real = Path(os.path.realpath(out.path))
        if real.is_dir():
            raise UsageError(f"{out.label} is a directory; give a file name")
        for what, given in ins:
            if same_file(real, given):
                raise UsageError(f"{out.label} would overwrite the input file {given} ({what})")
        if real in seen:
            raise UsageError(f"{out.label} and {seen[real]} are the same file")
        for other, label in seen.items():
            if other in real.parents or real in other.parents:
                inner, outer = (out.label, label) if other in real.parents else (label, out.label)
                raise UsageError(f"{outer} would be the directory of {inner}; give another path")
        seen[real] = out.label
        _check_writable(out, real, probed)


def _check_writable(out: Output, real: Path, probed: set[Path]) -> None:
    if written_in_place(out.path):  # nothing to create beside it
        if not os.access(out.path, os.W_OK):
            raise UsageError(f"{out.label} cannot be written: permission denied")
        return
    parent = real.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{out.label} cannot be written: {existing} is not a directory")
    if existing != parent and not out.new_dirs:
        raise UsageError(f"{out.label}: directory {out.path.parent} does not exist")
    if existing not in probed:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            raise UsageError(f"{out.label} cannot be written: creating a file in {existing} failed: "
                             f"{exc.strerror or exc}") from exc
        probed.add(existing)
    if real.is_file() and not os.access(real, os.W_OK):
        raise UsageError(f"{out.label} cannot be written: permission denied")


# ---- the model -----------------------------------------------------------------------------------

def load_model(spec: str | None) -> tuple[str, nn.Module, tuple[int, ...] | None]:
    """(display name, model in eval mode, default input shape or None); UsageError naming a norm layer
    whose statistics are broken (a NaN or negative variance: the model's own outputs would be NaN)."""
    from normfold import zoo

    if spec is None:
        spec = zoo.DEFAULT
    if model_file(spec) is not None:
        name, model, shape = spec, _load_factory(spec), None
    elif spec in zoo.ZOO:
        name, model, shape = spec, zoo.build(spec), zoo.ZOO[spec].input_shape
    else:
        raise UsageError(
            f"unknown model {spec!r}: not a zoo name ({', '.join(sorted(zoo.ZOO))}), "
            "path/to/file.py:factory, nor an .onnx file"
        )
    _check_tensors(model)
    _check_statistics(model)
    return name, model, shape


def _check_tensors(model: nn.Module) -> None:
    """The command line runs the model on CPU in float32 (and float64 for the oracle): refuse a model
    whose weights are elsewhere, naming the first such tensor."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_meta:
            raise UsageError(f"the model's {name} is on the meta device (a shape without values): the factory "
                             "must return a model with its weights loaded")
        if t.is_floating_point() and t.dtype != torch.float32:
            raise UsageError(f"the model's {name} is {str(t.dtype).removeprefix('torch.')}: the command line takes "
                             "a float32 model (it folds in float64; `normfold verify --precision fp16` checks an "
                             "fp16 export), so return model.float() from the factory")
        if t.device.type != "cpu":
            raise UsageError(f"the model's {name} is on {t.device}: the command line runs the model on the CPU "
                             "(onnxruntime's CUDA provider is --providers cuda), so return it on the CPU")


def _check_statistics(model: nn.Module) -> None:
    from normfold.nn.statistics import broken_statistics

    broken = broken_statistics(model)
    if broken:
        path, why = broken[0]
        more = f" (and {len(broken) - 1} more norm layers)" if len(broken) > 1 else ""
        layer = f"{path} ({type(model.get_submodule(path)).__name__})" if path else type(model).__name__
        raise UsageError(f"norm layer {layer} has broken statistics: {why}{more}")


def _load_factory(spec: str) -> nn.Module:
    path_text, factory_name = spec.rsplit(":", 1)
    path = Path(path_text)
    if path.is_dir():
        raise UsageError(f"model file {path} is a directory, not a Python file")
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_normfold_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    user_code(lambda: module_spec.loader.exec_module(module), f"importing {path}")
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise UsageError(f"{path} has no callable {factory_name!r}")
    model = user_code(factory, f"{spec}()")
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def user_code(fn: Callable[[], T], what: str) -> T:
    """``fn()``, the user's code: what it raises, or a ``sys.exit()`` in it, becomes one UsageError line
    naming ``what``, the error's key line and where in the user's code it happened. An allocation
    failure is raised as it is: ``main`` reports it as out of memory (the input is too large, not wrong)."""
    from normfold.fold.torch.trace import failing_call

    try:
        return fn()
    except SystemExit as exc:
        raise UsageError(f"{what} called sys.exit({'' if exc.code is None else repr(exc.code)})") from None
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        where = failing_call(exc, _NOT_USER)
        raise UsageError(f"{what} raised {type(exc).__name__}: {key_line(str(exc))}"
                         + (f" (at {where})" if where else "")) from exc


_NOT_USER = (os.path.dirname(torch.__file__),                                            # torch
             os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep, "<")   # normfold, <frozen ...>


# Multi-line messages whose first line is advice and whose problem is named further down.
_KEY_LINES = (re.compile(r"WeightsUnpickler error: (.*)"),)


def key_line(text: str) -> str:
    """The line of an error message that names the problem: its first line, or a known later one."""
    for pattern in _KEY_LINES:
        m = pattern.search(plain(text))
        if m:
            return m.group(1).split(". ")[0].strip().rstrip(".") + " (torch.load with weights_only=True refused it)"
    return first_line(text)


def model_and_input(args: argparse.Namespace) -> tuple[str, nn.Module, tuple[int, ...], torch.Tensor]:
    """(name, model, input shape, example input) from ``add_model_arguments``' arguments.

    The shape is --input-shape, else the zoo model's, else DEFAULT_SHAPE.
    """
    named = getattr(args, "named_shapes", None)
    if named:
        first = next(iter(named))
        raise UsageError(f"--input-shape {first}=...: a PyTorch MODEL takes one unnamed --input-shape N,C,H,W "
                         "(NAME=shape is for the inputs of an .onnx file)")
    name, model, zoo_shape = load_model(args.model)
    shape = args.input_shape or zoo_shape or DEFAULT_SHAPE
    return name, model, shape, example_input(model, shape, args.seed)


def example_input(model: nn.Module, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A seeded normal input the model accepts, or UsageError naming the shape."""
    check_memory(shape)
    x = seeded_input(shape, seed)
    text = ",".join(map(str, shape))
    with torch.no_grad():
        out = user_code(lambda: model(x), f"the model rejects input shape {text}: its forward")
    floats = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats:
        raise UsageError(f"the model's forward returned {_kind(out)} for input shape {text}; normfold needs "
                         "floating-point tensor outputs (a tensor, or tuples/lists/dicts of them)")
    check_finite({f"output {i}": t.numpy() for i, t in enumerate(floats)}, "the model", text)
    return x


def check_finite(outputs: dict[str, np.ndarray], what: str, shapes: str) -> None:
    """UsageError when an output of ``what`` on the seeded example input (of ``shapes``, as text) is not finite."""

    for name, out in outputs.items():
        bad = int((~np.isfinite(np.asarray(out, dtype=np.float64))).sum())
        if bad:
            raise UsageError(f"{what}'s {name} holds {bad} NaN or infinite values (of {np.size(out)}) on a seeded "
                             f"normal input of shape {shapes}: there is nothing to compare a "
                             "fold with (`normfold inspect` gives each norm's reason)")


def _kind(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor"
    return "None" if value is None else f"{type(value).__name__} without floating-point tensors"


def check_memory(shape: Iterable[int], what: str = "the example input") -> None:
    """UsageError when ``shape`` in float64 (the oracle's copy) alone exceeds the memory available."""
    shape = tuple(int(d) for d in shape)
    needed = math.prod(shape) * 8
    available = available_memory()
    if available is not None and needed > available:
        raise UsageError(f"{what} of shape {','.join(map(str, shape))} needs {_size(needed)} in float64, "
                         f"more than the {_size(available)} of memory available")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def is_onnx(spec: str | os.PathLike | None) -> bool:
    """Whether a MODEL argument names an .onnx file (rather than a zoo name or a factory)."""
    return spec is not None and str(spec).lower().endswith(".onnx")


def readable_onnx(path: str | os.PathLike, *, runnable: bool = False):
    """``normfold.verify.read_onnx(path)``, its refusal as UsageError (one line naming the file);
    with ``runnable``, also refused when onnxruntime's CPU provider cannot load it."""
    from normfold.verify import SessionError, read_onnx

    try:
        sig = read_onnx(path)
    except SessionError as exc:
        raise UsageError(str(exc)) from exc
    if runnable:
        cpu_session(path)
    return sig


def cpu_session(path: str | os.PathLike):
    """An onnxruntime session on the CPU provider, graph optimizations off, loaded from the file itself
    (not from a serialized copy: a file near 2 GB is held once), or UsageError naming the file."""
    from normfold.verify import SessionError
    from normfold.verify.session import open_session

    try:
        return open_session(path, "cpu", optimization="disable", where=str(path))
    except SessionError as exc:
        raise UsageError(str(exc)) from exc


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The example input every subcommand uses: seeded N(0, 1)."""
    from normfold.verify.inputs import random_input

    return torch.from_numpy(random_input(shape, np.float32, seed))


def model_accepts(model: nn.Module, xs: tuple[torch.Tensor, ...]) -> None:
    """The PyTorch model runs on one sample of each input (``xs``: a tuple of batches), or UsageError."""
    shapes = ", ".join(str(list(x.shape)) for x in xs)
    with torch.no_grad():
        user_code(lambda: model(*(x[:1] for x in xs)), f"the model rejects inputs of shape {shapes}: its forward")


def write_json_atomic(data: dict, path: Path) -> None:
    """Write ``data`` as JSON atomically (normfold.atomic), or UsageError naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--json {path} is a directory")
    try:
        write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"--json {path} cannot be written: {exc.strerror or exc}") from exc


def brief(text: str, limit: int = 160) -> str:
    """``text`` for one line of a report: past ``limit`` characters, its first sentence and its
    closing "(at file:line ...)" (where torch.fx failed), the middle elided."""
    if len(text) <= limit:
        return text
    where = text[text.rfind(" (at "):] if text.endswith(")") and " (at " in text else ""
    head = text[: len(text) - len(where)]
    cut = head.find(". ")
    head = head[: cut + 1] if 0 < cut < limit else head[:limit].rstrip() + " ..."
    return head + where


def error(message: str) -> int:
    """Print ``message`` as one line on stderr (its first line, plain text); return exit code 2."""
    print(f"normfold: error: {first_line(message) or 'failed'}", file=sys.stderr)
    return EXIT_USAGE
