"""An .onnx file given as MODEL: read, checked, and given a shape and an example array per input.

Every input gets a concrete shape before any work:

* ``--input-shape N,C,H,W``: the shape of a one-input file;
* ``--input-shape NAME=N,C,H,W`` (repeatable): that input's shape;
* an input with no shape given whose only symbolic axis is the leading (batch)
  one: its declared shape at the batch of the first shape given for an input
  with a symbolic batch (1 when none is); a fully static input: its own shape;
* ``--inputs FILE.npz`` (run, inspect, bench): the arrays, keyed by input name
  (read and checked by ``verify.dataset``: every input there, integer inputs
  integer, shapes that fit), are the example inputs and give the shapes.

A name the file does not have, a shape that does not fit the declared one, a
symbolic axis other than the batch without a shape: UsageError naming it. The
example input of each is ``random_input(shape, dtype, seed + k)`` for the k-th
input (floats N(0, 1), integers and bools 0 or 1: verify/inputs.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._common import UsageError, check_finite, check_memory, cpu_session, is_onnx, readable_onnx

MAX_SEED = 2**64


def _fixed(d) -> bool:
    return isinstance(d, int) and d > 0


def shapes_text(shapes: dict[str, tuple[int, ...]]) -> str:
    """``1,3,64,64`` for one input; ``image=1,3,64,64 im_shape=1,2`` for several."""
    if len(shapes) == 1:
        return ",".join(map(str, next(iter(shapes.values()))))
    return " ".join(f"{n}={','.join(map(str, s))}" for n, s in shapes.items())


def input_shapes(sig, where, unnamed: tuple[int, ...] | None, named: dict | None) -> dict[str, tuple[int, ...]]:
    """{input: concrete shape} for every input of ``sig`` (see the module docstring), or UsageError."""
    from normfold.verify.session import shape_mismatch

    declared = dict(zip(sig.names, sig.shapes))
    named = dict(named or {})
    flags = {n: f"--input-shape {n}={','.join(map(str, s))}" for n, s in named.items()}
    if unnamed is not None:
        if len(sig.names) != 1:
            raise UsageError(f"{where} takes {len(sig.names)} inputs ({', '.join(sig.names)}); name the shape of "
                             f"each: --input-shape {sig.names[0]}={','.join(map(str, unnamed))}")
        named = {sig.names[0]: tuple(unnamed)}
        flags = {sig.names[0]: f"--input-shape {','.join(map(str, unnamed))}"}
    for name, shape in named.items():
        if name not in declared:
            raise UsageError(f"{flags[name]}: {where} has no input {name!r} (its inputs: {', '.join(sig.names)})")
        problem = shape_mismatch(declared[name], shape)
        if problem:
            raise UsageError(f"{flags[name]} does not fit {where}: input {name!r} has shape {declared[name]} "
                             f"({problem})")
    batch = next((named[n][0] for n in sig.names if n in named and declared[n] and not _fixed(declared[n][0])), 1)
    shapes = {}
    for name, dims in declared.items():
        if name in named:
            shapes[name] = tuple(named[name])
            continue
        symbolic = [f"axis {axis} ({d})" for axis, d in enumerate(dims) if axis > 0 and not _fixed(d)]
        if symbolic:
            wanted = "N,C,H,W" if len(declared) == 1 else \
                f"{name}={','.join(str(d) if _fixed(d) else str(d).upper() for d in dims)} (numbers)"
            raise UsageError(f"{where}: input {name!r} has shape {dims} with symbolic {', '.join(symbolic)}; "
                             f"give --input-shape {wanted}")
        shapes[name] = tuple(d if _fixed(d) else batch for d in dims)
    return shapes


def example_inputs(sig, shapes: dict[str, tuple[int, ...]], seed: int) -> tuple[np.ndarray, ...]:
    """The seeded example array of each input, in the file's order: integers and bools in the input's dtype,
    floats in float32 (an fp16 file's inputs are rounded by onnxruntime; the float64 oracle takes them as drawn)."""
    from normfold.verify.inputs import random_input

    return tuple(random_input(shapes[n], np.float32 if dtype.kind == "f" else dtype, (seed + k) % MAX_SEED)
                 for k, (n, dtype) in enumerate(zip(sig.names, sig.input_dtypes)))


def add_inputs_argument(parser) -> None:
    parser.add_argument("--inputs", type=Path, default=None, metavar="FILE.npz",
                        help="the example inputs of an .onnx MODEL: an .npz keyed by input name (an .npy for a "
                             "one-input file); their shapes replace --input-shape")


def check_inputs_flag(args) -> None:
    """Before any work: --inputs feeds an .onnx MODEL, and gives the shapes --input-shape would."""
    if args.inputs is None:
        return
    if not is_onnx(args.model):
        raise UsageError(f"--inputs {args.inputs} feeds an .onnx MODEL; a PyTorch MODEL takes --input-shape")
    if args.input_shape is not None or getattr(args, "named_shapes", None):
        raise UsageError(f"--inputs {args.inputs} and --input-shape exclude each other: the arrays give the shapes")


def read_inputs(path, sig) -> tuple[np.ndarray, ...]:
    """The arrays of --inputs, one per input of ``sig``, or UsageError naming the file and the input."""
    from normfold.verify import InputError
    from normfold.verify.dataset import load_all

    try:
        return load_all(path, list(zip(sig.names, sig.shapes, sig.input_dtypes)))
    except InputError as exc:
        raise UsageError(str(exc)) from exc


@dataclass(frozen=True)
class OnnxModel:
    """An .onnx file given as MODEL: read and checked, with the shape of each input to use."""
    path: Path
    signature: object                   # normfold.verify.OnnxSignature
    shapes: dict                        # {input: shape}, every input, in the file's order
    input_shapes: dict | None           # for fold_onnx: {input: shape} where --input-shape fixes symbolic dims
    given: tuple | None = None          # the arrays of --inputs, one per input

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def shape(self) -> tuple[int, ...]:
        """The first input's shape."""
        return next(iter(self.shapes.values()))

    def describe(self) -> str:
        return shapes_text(self.shapes)

    def example(self, seed: int) -> tuple[np.ndarray, ...]:
        return self.given if self.given is not None else example_inputs(self.signature, self.shapes, seed)


def load_onnx(spec: str, args, *, runnable: bool = False) -> OnnxModel:
    """The .onnx MODEL with the shapes ``args`` (--input-shape, --seed) give, or UsageError: not a readable
    self-contained ONNX file, an input without a shape, an --input-shape the file does not take, an input too
    large for memory; with ``runnable``, also a file onnxruntime cannot load (an opset or op it does not know)
    or whose outputs on the seeded example inputs are not finite (a broken batch norm)."""
    path = Path(spec)
    sig = readable_onnx(path)
    named = getattr(args, "named_shapes", None)
    arrays = read_inputs(args.inputs, sig) if getattr(args, "inputs", None) is not None else None
    if arrays is not None:
        shapes = given = {n: tuple(a.shape) for n, a in zip(sig.names, arrays)}
    else:
        shapes = input_shapes(sig, path, args.input_shape, named)
        given = {sig.names[0]: args.input_shape} if args.input_shape is not None else dict(named or {})
    fixes = {n: list(s) for n, s in given.items()
             if any(not _fixed(d) for d in sig.shapes[sig.names.index(n)])}
    src = OnnxModel(path, sig, shapes, fixes or None, arrays)
    for name, shape in shapes.items():
        check_memory(shape, f"the input of {path}" if len(shapes) == 1 else f"input {name!r} of {path}")
    if runnable:
        _runs(src, args.seed)
    return src


def _runs(src: OnnxModel, seed: int) -> None:
    """onnxruntime's CPU provider loads ``src`` and its outputs on the seeded example inputs are finite."""
    from normfold.verify import SessionError
    from normfold.verify.session import run_session

    session = cpu_session(src.path)
    try:
        outputs = run_session(session, src.example(seed))
    except SessionError as exc:
        raise UsageError(str(exc)) from exc
    names = [o.name for o in session.get_outputs()]
    floats = {f"output {n!r}": o for n, o in zip(names, outputs) if np.issubdtype(np.asarray(o).dtype, np.floating)}
    check_finite(floats, str(src.path), src.describe())
