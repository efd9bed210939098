"""Train -> fold -> ship on real data: scikit-learn's handwritten digits (8x8).

    python scripts/train_digits.py              # the demo (a few minutes on 2 cores)
    python scripts/train_digits.py --json docs/digits_demo.json --plot docs/digits_demo.png --out digits-out
    python scripts/train_digits.py --survey     # the survey's claims -> docs/digits_survey.{md,png}

The demo trains ``DigitNet`` (normfold.zoo.digits) once per norm type, then
folds and exports it (normfold.export) and checks the folded ONNX file on the
360 labelled test images with normfold.verify.verify_dataset, the check behind
`normfold verify --inputs --labels` (the float64 oracle on 64 of them sets the
tolerance; every image compares the folded file on onnxruntime with the
PyTorch model): test accuracy of both, how many predictions differ (they must
not), and onnxruntime latency unfolded vs folded. ``--out DIR`` keeps the
ONNX files, the test set (digits_test.npz, digits_test.csv) and each check's
report (<name>.verify.json), so the same check runs from the command line.

The survey reproduces two qualitative claims of the normalization survey
(Huang et al., "Normalization Techniques in Training DNNs", 2020) at this scale:
batch norm degrades at batch sizes 2 and 4 while group norm does not; ZCA and
IterNorm whitening train stably where PCA whitening struggles.

How data/digits.npz was made (once; nothing depends on scikit-learn):

    pip install scikit-learn==1.9.1
    python -c "import numpy as np; from sklearn.datasets import load_digits; d = load_digits(); \
np.savez_compressed('data/digits.npz', images=d.images.astype(np.uint8), labels=d.target.astype(np.uint8))"
    pip uninstall -y scikit-learn scipy joblib threadpoolctl
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from normfold.export import export_with_baseline
from normfold.atomic import atomic_path, write_png, write_text
from normfold.nn import is_norm
from normfold.nn.whitening import eigh_descending
from normfold.verify import verify_dataset
from normfold.verify.session import open_session, run_session
from normfold.zoo.digits import DigitNet, Digits, load_digits

DEMO_NORMS = ("bn", "center", "scale", "brn", "iternorm", "zca", "pca", "cholesky", "decorr", "gn", "ln")
NORM_KW = {"gn": {"num_groups": 8}}     # 4-8 channels per group (the factory's default 32 groups would be InstanceNorm at C=32)
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class History:
    norm: str
    batch_size: int
    seed: int
    epoch_loss: list[float] = field(default_factory=list)       # mean training loss per epoch
    epoch_acc: list[float] = field(default_factory=list)        # eval-mode test accuracy after each epoch
    diverged: str = ""                                          # why training stopped early, if it did
    seconds: float = 0.0
    sweep: str = ""                                             # survey: "batch" or "whitening"
    axis_swaps: float = float("nan")                            # survey: see AxisSwaps

    @property
    def final_acc(self) -> float:
        return self.epoch_acc[-1] if self.epoch_acc and not self.diverged else float("nan")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y.numpy()).mean())


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return model.eval()(x).argmax(1).numpy()


class AxisSwaps:
    """How often the principal axes of a layer's input change order between consecutive batches.

    Per group of ``g`` channels, D_t holds the eigenvectors of batch t's covariance
    sorted by decreasing eigenvalue. Axis i of batch t counts as swapped when the
    axis of batch t-1 it is most aligned with (max |cos|) is not axis i. PCA
    whitening outputs coordinates along these axes, so a swap permutes the channels
    the next layer sees; ZCA (D Lambda^-1/2 D^T) and IterNorm do not depend on the
    order or the signs of the axes. Measured on the input, so the same for any norm.
    """

    def __init__(self, module: nn.Module, group: int = 16):
        self.group, self.previous, self.swapped, self.total = group, None, 0, 0
        self.handle = module.register_forward_pre_hook(self)

    @torch.no_grad()
    def __call__(self, module, args):
        if not module.training:
            return
        x = args[0].detach().double()
        c = x.shape[1]
        xs = x.transpose(0, 1).reshape(c // self.group, self.group, -1)
        xs = xs - xs.mean(-1, keepdim=True)
        axes = eigh_descending(xs @ xs.transpose(-2, -1) / xs.shape[-1])[1]
        if self.previous is not None:
            match = (axes.transpose(-2, -1) @ self.previous).abs().argmax(-1)     # (G, g)
            self.swapped += int((match != torch.arange(self.group)).sum())
            self.total += match.numel()
        self.previous = axes

    @property
    def rate(self) -> float:
        return self.swapped / self.total if self.total else float("nan")


def train(data: Digits, norm: str, *, batch_size: int, epochs: int, seed: int, lr: float,
          track_axes: bool = False) -> tuple[nn.Module, History]:
    """Adam, cross-entropy, the same seeded shuffles for every norm; stops on a non-finite loss.

    ``track_axes``: record ``History.axis_swaps`` at the first norm layer (see AxisSwaps).
    """
    torch.manual_seed(seed)
    model = DigitNet(norm, **NORM_KW.get(norm, {}))
    meter = AxisSwaps(model.features[1]) if track_axes else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    hist = History(norm, batch_size, seed)
    n, start = len(data.y_train), time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order, total = torch.randperm(n, generator=gen), 0.0
        steps = n // batch_size          # drop the last partial batch: BN cannot train on one sample
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            try:
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            except RuntimeError as exc:          # e.g. an eigendecomposition that fails to converge
                hist.diverged = f"epoch {epoch + 1} step {i + 1}: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                break
            if not math.isfinite(loss.item()):
                hist.diverged = f"epoch {epoch + 1} step {i + 1}: loss {loss.item()}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        if hist.diverged:
            break
        hist.epoch_loss.append(total / steps)
        hist.epoch_acc.append(accuracy(model, data.x_test, data.y_test))
    hist.seconds = time.perf_counter() - start
    if meter is not None:
        hist.axis_swaps = meter.rate
        meter.handle.remove()
    return model.eval(), hist


def median_ms(session, x: np.ndarray, repeats: int) -> float:
    """Median wall time of one ``session.run`` after 10 warm-up runs."""
    for _ in range(10):
        run_session(session, (x,))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_session(session, (x,))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def write_test_set(data: Digits, out: Path, input_name: str = "x") -> tuple[Path, Path]:
    """The 360 test images as an .npz keyed by the ONNX input's name, and their labels as CSV ``row,label``:
    what `normfold verify --inputs ... --labels ...` reads."""
    npz, csv = out / "digits_test.npz", out / "digits_test.csv"
    with atomic_path(npz, suffix=".npz") as tmp:   # the suffix keeps np.savez from appending one
        np.savez(tmp, **{input_name: data.x_test.numpy()})
    write_text(csv, "".join(f"{i},{int(y)}\n" for i, y in enumerate(data.y_test)))
    return npz, csv


def ship(model: nn.Module, data: Digits, out: Path, name: str, repeats: int, test_set: tuple[Path, Path]) -> dict:
    """Fold, export, and check on the labelled test set with normfold's dataset check (the code behind
    `normfold verify --inputs --labels`); onnxruntime latency unfolded vs folded."""
    x_test = data.x_test
    folded, unfolded = export_with_baseline(model, x_test[:2], out / f"{name}.onnx", out / f"{name}.unfolded.onnx")
    report = verify_dataset(model, folded.path, test_set[0], labels=test_set[1], oracle_samples=64)
    write_text(out / f"{name}.verify.json", json.dumps(report.to_dict(), indent=1) + "\n")
    (row,) = [r for r in report.rows if r.run == "onnx_cpu"]
    one = x_test[:1].numpy()
    lat = {"unfolded_ms": median_ms(open_session(unfolded.path, "cpu"), one, repeats),
           "folded_ms": median_ms(open_session(folded.path, "cpu"), one, repeats)}
    norms = sum(1 for m in model.modules() if is_norm(m))
    oracle_rows = report.oracle.checks
    return {
        "torch_acc": report.accuracy["original_fp32"],
        "onnx_acc": report.accuracy["onnx_cpu"],
        "mismatches": len(row.disagree),
        "samples": report.samples,
        "folded": len(folded.fold_report.folded),
        "norms": norms,
        "skipped": [s.reason for s in folded.fold_report.skipped],
        "verify_ok": report.ok,
        # max |logit error| vs the float64 oracle (64 test images): the folded ONNX run, and fp32 eager for scale
        "onnx_err": max(c.stats.max_abs for c in oracle_rows if c.run.startswith("onnx")),
        "fp32_err": max(c.stats.max_abs for c in oracle_rows if c.allowed is None),
        # max |ONNX - PyTorch fp32| over all 360 test images, and what the rule allows
        "diff": row.max_abs,
        "allowed": row.allowed,
        "ops_unfolded": sum(unfolded.op_counts.values()),
        "ops_folded": sum(folded.op_counts.values()),
        **lat,
    }


def plot_demo(rows: list[dict], path: Path, command: str) -> None:
    """Accuracy of the PyTorch model and of its folded ONNX file, and their largest logit difference over
    the test set against the tolerance, per norm: all from the dataset check's reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "diverged" not in r]
    if not rows:
        print(f"nothing to plot in {path}: every model diverged", file=sys.stderr)
        return
    names, x = [r["norm"] for r in rows], np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2))
    ax1.bar(x - 0.2, [100 * r["torch_acc"] for r in rows], 0.4, label="PyTorch fp32")
    ax1.bar(x + 0.2, [100 * r["onnx_acc"] for r in rows], 0.4, label="folded ONNX (onnxruntime CPU)")
    low = min(min(r["torch_acc"], r["onnx_acc"]) for r in rows)
    ax1.set_ylim(100 * low - 2, 100.5)
    ax1.set(ylabel=f"test accuracy % ({rows[0]['samples']} images)", title="accuracy (labels: data/digits.npz)")
    ax2.plot(x, [r["allowed"] for r in rows], "_", markersize=22, mew=2, label="allowed (set by the float64 oracle)")
    ax2.plot(x, [r["diff"] for r in rows], "o", label="max |ONNX - PyTorch| over the test set")
    ax2.set(yscale="log", ylabel="logit difference", title="largest difference vs the tolerance")
    for ax, where in ((ax1, "lower left"), (ax2, "upper left")):
        ax.set_xticks(x, names, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc=where)
    fig.suptitle(command, fontsize=9)
    fig.tight_layout()
    write_png(path, fig)


def demo(args) -> int:
    data = load_digits()
    print(f"digits: {len(data.y_train)} train, {len(data.y_test)} test, 8x8; batch {args.batch_size}, "
          f"{args.epochs} epochs, Adam lr {args.lr}, seed {args.seed}; torch threads {torch.get_num_threads()}")
    header = (f"{'norm':<9}{'train s':>8}{'torch acc':>10}{'onnx acc':>9}{'mismatch':>9}{'folded':>8}"
              f"{'verify':>7}{'onnx err':>9}{'fp32 err':>9}{'max diff':>9}{'ops':>9}{'ms unf':>8}{'ms fold':>8}")
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        test_set = write_test_set(data, out)
        print(header)
        for norm in args.norms:
            model, hist = train(data, norm, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed, lr=args.lr)
            if hist.diverged:
                print(f"{norm:<9}training diverged at {hist.diverged}")
                rows.append({"norm": norm, "diverged": hist.diverged})
                continue
            r = {"norm": norm, "train_s": hist.seconds,
                 **ship(model, data, out, f"digits-{norm}", args.repeats, test_set)}
            rows.append(r)
            failed |= r["mismatches"] > 0 or not r["verify_ok"]
            print(f"{norm:<9}{r['train_s']:>8.1f}{r['torch_acc']:>10.2%}{r['onnx_acc']:>9.2%}{r['mismatches']:>9}"
                  f"{r['folded']:>5}/{r['norms']:<2}{'pass' if r['verify_ok'] else 'FAIL':>7}"
                  f"{r['onnx_err']:>9.1e}{r['fp32_err']:>9.1e}{r['diff']:>9.1e}"
                  f"{r['ops_unfolded']:>4}->{r['ops_folded']:<3}{r['unfolded_ms']:>8.3f}{r['folded_ms']:>8.3f}",
                  flush=True)
            for reason in dict.fromkeys(r["skipped"]):
                print(f"{'':<9}skipped: {reason}")
    print(f"accuracy, mismatch, verify, max diff: normfold.verify_dataset on the {len(data.y_test)} labelled test "
          "images (the check behind `normfold verify --inputs --labels`)")
    print("onnx/fp32 err: vs the float64 oracle on 64 of them; latency: onnxruntime CPU, batch 1, median of "
          f"{args.repeats} runs; ops: ONNX nodes unfolded->folded")
    print("FAIL: a folded model disagrees with PyTorch" if failed else
          "PASS: every folded ONNX model predicts exactly what its PyTorch model predicts")
    if args.json:
        write_text(Path(args.json), json.dumps(rows, indent=2) + "\n")
    if args.plot:
        plot_demo(rows, Path(args.plot), f"python scripts/train_digits.py --plot {args.plot} (seed {args.seed}, "
                                         f"{args.epochs} epochs)")
    return 1 if failed else 0


# --------------------------------------------------------------------------- survey

BATCH_SIZES = (2, 4, 8, 16, 32)
WHITENING_NORMS = ("bn", "zca", "iternorm", "cholesky", "pca", "decorr")


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.pstdev(finite) if len(finite) > 1 else 0.0


def _pct(values: list[float]) -> str:
    m, s = _mean_std(values)
    bad = sum(not math.isfinite(v) for v in values)
    text = f"{100 * m:.1f} ± {100 * s:.1f}" if math.isfinite(m) else "diverged"
    return text + (f" ({bad} diverged)" if bad and math.isfinite(m) else "")


def survey(args) -> int:
    data, seeds = load_digits(), range(args.seeds)
    runs: list[History] = []

    def run(norm, bs, epochs, sweep):
        for seed in seeds:
            _, h = train(data, norm, batch_size=bs, epochs=epochs, seed=seed, lr=args.survey_lr,
                         track_axes=sweep == "whitening")
            h.sweep = sweep
            runs.append(h)
            print(f"{norm:<9} batch {bs:>2} seed {seed}: test acc {h.final_acc:.3f}  {h.seconds:5.1f}s"
                  + (f"  diverged: {h.diverged}" if h.diverged else ""), flush=True)

    for norm in args.small_batch_norms:
        for bs in BATCH_SIZES:
            run(norm, bs, args.survey_epochs, "batch")
    for norm in WHITENING_NORMS:
        run(norm, 32, args.whitening_epochs, "whitening")
    write_survey(runs, args)
    return 0


def replot(args) -> int:
    """Redraw the table and plot from docs/digits_survey.json (give the options the survey ran with)."""
    path = Path(args.docs) / "digits_survey.json"
    write_survey([History(**h) for h in json.loads(path.read_text())], args)
    return 0


def write_survey(runs: list[History], args) -> None:
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    command = "python scripts/train_digits.py --survey " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("seeds", args.seeds), ("survey_epochs", args.survey_epochs),
                                                     ("whitening_epochs", args.whitening_epochs),
                                                     ("survey_lr", args.survey_lr),
                                                     ("small_batch_norms", " ".join(args.small_batch_norms))))
    write_text(docs / "digits_survey.md", survey_markdown(runs, args, command))
    plot_survey(runs, docs / "digits_survey.png", command, args.small_batch_norms)
    write_text(docs / "digits_survey.json", json.dumps([asdict(h) for h in runs], indent=1) + "\n")
    print(f"wrote {docs / 'digits_survey.md'}, {docs / 'digits_survey.png'}, {docs / 'digits_survey.json'}")


def _select(runs, sweep, norm, bs=32):
    return [h for h in runs if h.sweep == sweep and h.norm == norm and h.batch_size == bs]


def survey_markdown(runs: list[History], args, command: str) -> str:
    lines = [
        "# Digits: the survey's qualitative claims at 8x8 scale",
        "",
        f"Made by `{command}` (torch threads {args.threads}).",
        "",
        f"`DigitNet` (3 conv-norm-ReLU blocks, widths 32/32/64; normfold.zoo.digits) on scikit-learn's digits "
        f"(1437 train / 360 test), Adam lr {args.survey_lr}, {args.survey_epochs} epochs at every batch size "
        f"(so small batches take more steps), {args.whitening_epochs} epochs for the whitening runs, seeds 0..{args.seeds - 1}. Test accuracy in eval mode "
        "(running statistics: what would be deployed), mean ± std over seeds, in %. "
        "GroupNorm uses 8 groups; whitening layers use groups of 16 channels (IterNorm: one group of all 32 or 64 channels, T=5).",
        "",
        "## Batch norm at tiny batches vs group norm",
        "",
        "| norm | " + " | ".join(f"batch {bs}" for bs in BATCH_SIZES) + " |",
        "|---|" + "---|" * len(BATCH_SIZES),
    ]
    for norm in args.small_batch_norms:
        lines.append(f"| {norm} | " + " | ".join(_pct([h.final_acc for h in _select(runs, "batch", norm, bs)]) for bs in BATCH_SIZES) + " |")
    lines += [
        "",
        f"## Whitening: ZCA and IterNorm vs PCA (batch 32, {args.whitening_epochs} epochs)",
        "",
        "| norm | test acc % | final train loss | train loss after epoch 1 | seeds diverged "
        "| principal axes reordered between batches (layer 1) |",
        "|---|---|---|---|---|---|",
    ]
    for norm in WHITENING_NORMS:
        hs = _select(runs, "whitening", norm)
        final_loss = _mean_std([h.epoch_loss[-1] if h.epoch_loss and not h.diverged else float("nan") for h in hs])
        first_loss = _mean_std([h.epoch_loss[0] if h.epoch_loss else float("nan") for h in hs])
        lines.append(f"| {norm} | {_pct([h.final_acc for h in hs])} | {final_loss[0]:.3f} | {first_loss[0]:.3f} | "
                     f"{sum(bool(h.diverged) for h in hs)}/{len(hs)} | {100 * _mean_std([h.axis_swaps for h in hs])[0]:.0f}% |")
    lines += ["", "![digits survey](digits_survey.png)", ""]
    return "\n".join(lines)


def plot_survey(runs: list[History], path: Path, command: str, small_batch_norms) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for norm in small_batch_norms:
        stats = [_mean_std([h.final_acc for h in _select(runs, "batch", norm, bs)]) for bs in BATCH_SIZES]
        ax1.errorbar(BATCH_SIZES, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats],
                     marker="o", capsize=3, label=norm)
    ax1.set_xscale("log", base=2)
    ax1.set(xlabel="batch size", ylabel="test accuracy % (eval mode)", title="small batches (mean ± std over seeds)")
    ax1.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    ax1.minorticks_off()
    for norm in WHITENING_NORMS:
        hs = [h for h in _select(runs, "whitening", norm) if h.epoch_acc]
        epochs = min(len(h.epoch_acc) for h in hs)
        x = np.arange(1, epochs + 1)
        for ax, key, scale in ((ax2, "epoch_acc", 100), (ax3, "epoch_loss", 1)):
            curves = np.array([getattr(h, key)[:epochs] for h in hs]) * scale
            (line,) = ax.plot(x, curves.mean(0), marker=".", label=norm)
            ax.fill_between(x, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
    ax2.set(xlabel="epoch", ylabel="test accuracy %", title="whitening, batch 32 (band: min..max over seeds)")
    ax3.set(xlabel="epoch", ylabel="training loss", yscale="log", title="whitening: training loss")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(command, fontsize=9)
    fig.tight_layout()
    write_png(path, fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--survey", action="store_true", help="run the survey experiments instead of the demo")
    p.add_argument("--replot", action="store_true",
                   help="survey: redraw the table and plot from DOCS/digits_survey.json without training")
    p.add_argument("--norms", nargs="+", default=list(DEMO_NORMS), help="norm names (create_norm) for the demo")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3, help="survey: seeds per configuration")
    p.add_argument("--small-batch-norms", nargs="+", default=["bn", "gn"],
                   help="survey: norms trained at every batch size (add brn for batch renormalization)")
    p.add_argument("--survey-epochs", type=int, default=3, help="survey: epochs per run (every batch size)")
    p.add_argument("--whitening-epochs", type=int, default=8, help="survey: epochs of the whitening runs (batch 32)")
    p.add_argument("--survey-lr", type=float, default=1e-3, help="survey: Adam learning rate")
    p.add_argument("--repeats", type=int, default=200, help="timed onnxruntime runs per model")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the net is tiny)")
    p.add_argument("--out", default=None, help="keep the ONNX files here (default: a temporary directory)")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--plot", default=None, help="demo: draw accuracy and differences per norm here (.png)")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="survey: where the table and plot go")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.replot:
        return replot(args)
    return survey(args) if args.survey else demo(args)


if __name__ == "__main__":
    sys.exit(main())
