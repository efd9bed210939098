"""Arguments and model loading shared by the subcommands.

A bad argument raises UsageError; ``main`` turns it into one line on stderr and
exit code 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..atomic import write_text

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_SHAPE = (1, 3, 224, 224)  # for a file model without --input-shape


class UsageError(Exception):
    """Bad input or environment: exit 2 with this message."""


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


def parse_shape(text: str) -> tuple[int, ...]:
    """An input shape, ``1,3,224,224`` or ``1x3x224x224``."""
    return positive_ints(text, "an input shape of positive integers, e.g. 1,3,224,224", separators=",x")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="a zoo name (see `normfold zoo`), path/to/file.py:factory, or an .onnx file; "
             "default: the bundled default model",
    )
    parser.add_argument("--input-shape", type=parse_shape, default=None, metavar="N,C,H,W",
                        help="example input shape (default: the zoo model's, an .onnx file's own, or 1,3,224,224)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the example input (default 0)")


def load_model(spec: str | None) -> tuple[str, nn.Module, tuple[int, ...] | None]:
    """(display name, model in eval mode, default input shape or None)."""
    from normfold import zoo

    if spec is None:
        spec = zoo.DEFAULT
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        return spec, _load_factory(spec), None
    if spec not in zoo.ZOO:
        raise UsageError(
            f"unknown model {spec!r}: not a zoo name ({', '.join(sorted(zoo.ZOO))}) "
            "nor path/to/file.py:factory"
        )
    return spec, zoo.build(spec), zoo.ZOO[spec].input_shape


def _load_factory(spec: str) -> nn.Module:
    path_text, factory_name = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_normfold_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise UsageError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise UsageError(f"{path} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as exc:
        raise UsageError(f"{spec}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def model_and_input(args: argparse.Namespace) -> tuple[str, nn.Module, tuple[int, ...], torch.Tensor]:
    """(name, model, input shape, example input) from ``add_model_arguments``' arguments.

    The shape is --input-shape, else the zoo model's, else DEFAULT_SHAPE.
    """
    name, model, zoo_shape = load_model(args.model)
    shape = args.input_shape or zoo_shape or DEFAULT_SHAPE
    return name, model, shape, example_input(model, shape, args.seed)


def example_input(model: nn.Module, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A seeded normal input the model accepts, or UsageError naming the shape."""
    x = seeded_input(shape, seed)
    try:
        with torch.no_grad():
            model(x)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(
            f"the model rejects input shape {','.join(map(str, shape))}: {type(exc).__name__}: {first}"
        ) from exc
    return x


def is_onnx(spec: str | os.PathLike | None) -> bool:
    """Whether a MODEL argument names an .onnx file (rather than a zoo name or a factory)."""
    return spec is not None and str(spec).lower().endswith(".onnx")


@dataclass(frozen=True)
class OnnxModel:
    """An .onnx file given as MODEL: read and checked, with the input shape to use."""
    path: Path
    signature: object                   # normfold.verify.OnnxSignature
    shape: tuple[int, ...]              # the example input's shape
    input_shapes: dict | None           # for fold_onnx: {input: shape} when --input-shape fixes symbolic dims

    @property
    def name(self) -> str:
        return str(self.path)


def load_onnx(spec: str, input_shape: tuple[int, ...] | None, *, runnable: bool = False) -> OnnxModel:
    """The .onnx MODEL, or UsageError: not a readable self-contained ONNX file, several inputs,
    symbolic dims without --input-shape, an --input-shape the file does not take; with
    ``runnable``, also a file onnxruntime cannot load (an opset or op it does not know)."""
    from normfold.verify.session import shape_mismatch

    path = Path(spec)
    sig = readable_onnx(path, runnable=runnable)
    if len(sig.names) != 1:
        raise UsageError(f"{path} takes {len(sig.names)} inputs ({', '.join(sig.names)}); the command line "
                         "handles single-input models (use the Python API for several)")
    name, declared = sig.names[0], sig.shapes[0]
    if input_shape is not None:
        problem = shape_mismatch(declared, input_shape)
        if problem:
            raise UsageError(f"--input-shape {','.join(map(str, input_shape))} does not fit {path}: input "
                             f"{name!r} has shape {declared} ({problem})")
        fixes_symbols = any(not (isinstance(d, int) and d > 0) for d in declared)
        return OnnxModel(path, sig, tuple(input_shape), {name: list(input_shape)} if fixes_symbols else None)
    symbolic = [f"axis {axis} ({d})" for _, axis, d in sig.symbolic()]
    if symbolic:
        raise UsageError(f"{path}: input {name!r} has shape {declared} with symbolic {', '.join(symbolic)}; "
                         "give --input-shape N,C,H,W")
    batch = declared[0] if declared and isinstance(declared[0], int) and declared[0] > 0 else 1
    return OnnxModel(path, sig, (batch, *declared[1:]), None)


def readable_onnx(path: str | os.PathLike, *, runnable: bool = False):
    """``normfold.verify.read_onnx(path)``, its refusal as UsageError (one line naming the file);
    with ``runnable``, also refused when onnxruntime's CPU provider cannot load it."""
    from normfold.verify import SessionError, read_onnx
    from normfold.verify.session import open_session

    try:
        sig = read_onnx(path)
        if runnable:
            open_session(sig.proto.SerializeToString(), "cpu", optimization="disable", where=str(path))
        return sig
    except SessionError as exc:
        raise UsageError(str(exc)) from exc


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The example input every subcommand uses: seeded N(0, 1)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def not_an_input(output: Path, inputs: list[Path], flag: str) -> None:
    """UsageError when writing ``output`` would replace one of ``inputs``."""
    for f in inputs:
        if output.resolve() == Path(f).resolve():
            raise UsageError(f"{flag} {output} would overwrite the input file {f}")


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it can be written, or UsageError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"output directory {path} cannot be written: {exc.strerror or exc}") from exc
    return path


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
    print(f"normfold: error: {message}", file=sys.stderr)
    return EXIT_USAGE
