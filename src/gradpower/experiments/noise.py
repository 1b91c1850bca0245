"""``gradpower noise``: measure a model's gradient noise and predict the best p per batch size.

On one set of weights (after ``--steps-before`` training steps, or a run's
checkpoint with ``--from``) it draws ``micro_batches`` micro-batches of
``micro_batch_size`` sequences, records each micro-batch gradient (no update happens),
and estimates per coordinate the mean gradient and the micro-batch noise. The
noise of a mini-batch of B sequences is sigma_micro sqrt(micro_batch_size / B), so one
measurement serves every batch size; p* per batch size follows from
:mod:`gradpower.diagnostics.predict`. This module runs things (training,
files, figures); the statistics it uses are :mod:`gradpower.diagnostics`'.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.pipeline import build_data
from ..diagnostics import P_GRID, Measurement, MicroBatchProbe, loss_decrease, summary_rows
from ..diagnostics.predict import FLAT_FRACTION, edge_warning, flat_text
from ..errors import BadInput
from ..fileio import atomic_write, warn
from ..models import build_model, config_from_dict
from ..theory.toy import update_limit
from ..train import TrainConfig, accumulate_gradients, train
from ..train.assemble import data_config, model_config_for
from ..train.checkpoint import load_latest, restore_model
from ..train.distributed import Runtime, resolve_device
from .job import PlannedRun
from .kinds import SavedSpec, read_experiment, register, write_experiment
from .runs import RunReadError, load_run

NOISE_COLUMNS = ["batch_size", "block", "coords", "abs_g_q10", "abs_g_q50", "abs_g_q90", "noise_ratio_q10",
                 "noise_ratio_q50", "noise_ratio_q90", "frac_below_eps", "b_simple", "p_star_uniform",
                 "p_star_gaussian", "frac_no_mean", "p_flat_low_uniform", "p_flat_high_uniform",
                 "p_flat_low_gaussian", "p_flat_high_gaussian"]


def measure(model: torch.nn.Module, batches: list[torch.Tensor], device: torch.device, sample: int = 2048,
            seed: int = 0) -> Measurement:
    """Per-micro-batch gradients of ``model`` on ``batches`` (same weights), pooled into a Measurement.

    The backward pass is the training loop's own (:func:`accumulate_gradients`, MoE aux loss included);
    no update happens.
    """
    probe = MicroBatchProbe(model.named_parameters(), sample=sample, seed=seed)
    model.zero_grad(set_to_none=True)
    aux_coef = float(getattr(model.config, "aux_loss_coef", 0.0))
    accumulate_gradients(model, batches, Runtime(device), aux_coef, probe)
    model.zero_grad(set_to_none=True)
    return probe.measurement()


def _trained_model(run_dir: Path, what: str) -> tuple[torch.nn.Module, TrainConfig]:
    """The model of a run folder at its newest checkpoint (any format), and the run's config."""
    try:
        run = load_run(run_dir)
    except RunReadError as exc:
        raise BadInput(f"{what}: {exc}") from None
    found = load_latest(run_dir / "checkpoints")
    if found is None:
        raise BadInput(f"{what}: {run_dir} has no checkpoint to measure")
    model = build_model(config_from_dict(run.model))
    restore_model(*found, model)
    return model, TrainConfig.from_dict(run.config)


@dataclass
class NoiseSpec(SavedSpec):
    """``gradpower noise``: the weights to measure (the shared TrainConfig settings ``base``, after
    ``steps_before`` training steps or a run's checkpoint ``from_run``), the micro-batches drawn, and what p* is
    predicted for (``batch_sizes``, the optimizer's ``eps``, the ``p`` of the figures)."""

    base: dict[str, Any] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    steps_before: int = 0
    micro_batch_size: int | None = None
    micro_batches: int = 16
    from_run: str | None = None
    p: float = 1.2
    eps: float = 1e-8
    sample: int = 2048
    seed: int = 1234

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise BadInput(f"--batch-sizes must be positive integers, got {self.batch_sizes}")
        if self.micro_batches < 2:
            raise BadInput("--micro-batches must be at least 2 (the noise is their spread)")
        self.micro_batch_size = self.micro_batch_size or min(self.batch_sizes)

    def config(self) -> TrainConfig:
        return TrainConfig(**self.base)


@dataclass
class NoiseResult:
    """A measurement's analysis: the rows of noise.csv (per batch size and block), and the measurement for the
    figures."""

    spec: NoiseSpec
    measurement: Measurement
    rows: list[dict[str, Any]]
    what: str

    def text(self) -> str:
        meas = self.measurement
        lines = [
            f"gradient noise of {self.what}: {self.spec.micro_batches} micro-batches of "
            f"{self.spec.micro_batch_size} sequences, B_simple = {meas.noise_scale():.3g} sequences",
            "| batch size | p* (uniform noise) [flat range] | p* (Gaussian noise) [flat range] | median sigma/|mu| "
            "| share of |g|^p < eps | share without a resolvable mean |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.totals:
            cells = [f"{row[f'p_star_{n}']:g} {flat_text(row[f'p_flat_low_{n}'], row[f'p_flat_high_{n}'])}"
                     for n in ("uniform", "gaussian")]
            lines.append(f"| {row['batch_size']} | {cells[0]} | {cells[1]} | "
                         f"{row['noise_ratio_q50']:.3g} | {row['frac_below_eps']:.3f} | {row['frac_no_mean']:.3f} |")
        lines.append(f"flat range: the p whose predicted loss decrease D(p) is within {FLAT_FRACTION:.0%} of its "
                     "maximum (noise_dp.png): the prediction does not tell them apart, so p* is no sharper than that")
        return "\n".join(lines)

    @property
    def totals(self) -> list[dict[str, Any]]:
        """The rows over every tensor (block ``all``), one per batch size."""
        return [row for row in self.rows if row["block"] == "all"]


#: The measurement of a noise folder, beside its ``experiment.json``.
MEASUREMENT_FILE = "measurement.npz"


class NoiseExperiment:
    """``noise`` as a kind of experiment (:mod:`.kinds`): one measurement of a model's gradient noise, saved, and
    the p* it predicts per batch size, rebuilt from the saved measurement by ``gradpower report``."""

    kind = "noise"
    spec_type = NoiseSpec

    def plan(self, spec: NoiseSpec, runs_root: Path) -> list[PlannedRun]:
        """The training before the measurement (``steps_before`` steps, in ``runs_root/train``), if any."""
        if spec.from_run is not None or spec.steps_before <= 0:
            return []
        cfg = dataclasses.replace(spec.config(), steps=spec.steps_before, out=str(runs_root / "train"),
                                  overwrite=True)
        return [PlannedRun("training before the measurement", cfg.seed, cfg)]

    def planned_config(self, spec: NoiseSpec, entry: dict[str, Any]) -> TrainConfig | None:
        return None  # its record lists no runs to pair

    def analyse(self, folder: Path) -> NoiseResult:
        record = read_experiment(folder)
        spec = NoiseSpec.from_dict(record["spec"])
        meas = load_measurement(folder / MEASUREMENT_FILE, record["measurement"])
        rows = [row for b in spec.batch_sizes for row in summary_rows(meas, b, spec.p, spec.eps)]
        return NoiseResult(spec, meas, rows, record["what"])

    def write(self, folder: Path, result: NoiseResult) -> str:
        with open(folder / "noise.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=NOISE_COLUMNS)
            writer.writeheader()
            for row in result.rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        _figures(result.measurement, result.spec.batch_sizes, folder, result.spec.eps)
        for row in result.totals:
            for noise in ("uniform", "gaussian"):
                edge = edge_warning(f"batch {row['batch_size']}, {noise} noise:", row[f"p_star_{noise}"])
                if edge:
                    warn(edge)
        return result.text()


NOISE = register(NoiseExperiment())


def save_measurement(path: Path, meas: Measurement) -> dict[str, Any]:
    """The measurement's arrays in ``path`` (written atomically); returns its scalars for the record."""
    def write(f: Any) -> None:
        np.savez(f, names=meas.names.astype(str), weights=meas.weights, mu=meas.mu, sigma_micro=meas.sigma_micro)

    atomic_write(path, write)
    return {"micro_batch_size": meas.micro_batch_size, "micro_per_step": meas.micro_per_step,
            "tensor_norms": {k: list(v) for k, v in meas.tensor_norms.items()}, "samples": meas.samples}


def load_measurement(path: Path, scalars: dict[str, Any]) -> Measurement:
    """A measurement saved by :func:`save_measurement`; a missing or damaged file is refused in one line."""
    try:
        with np.load(path) as arrays:
            return Measurement(arrays["names"], arrays["weights"], arrays["mu"], arrays["sigma_micro"],
                               scalars["micro_batch_size"], scalars["micro_per_step"],
                               {k: tuple(v) for k, v in scalars["tensor_norms"].items()}, scalars["samples"])
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"{path}: the saved measurement cannot be read ({type(exc).__name__}); run the same "
                       "'gradpower noise' command again to measure anew") from None


def run_noise(cfg: TrainConfig, batch_sizes: list[int], out: Path, *, steps_before: int = 0,
              micro_batch_size: int | None = None, micro_batches: int = 16, from_run: str | None = None, p: float = 1.2,
              eps: float = 1e-8, sample: int = 2048, seed: int = 1234, command: str = "gradpower noise") -> str:
    """Measure, save the measurement and ``experiment.json``, then write noise.csv, noise_dp.png and
    noise_map.png into ``out``; return the p* table."""
    spec = NoiseSpec(cfg.to_dict(), list(batch_sizes), steps_before, micro_batch_size, micro_batches, from_run, p,
                     eps, sample, seed)
    out.mkdir(parents=True, exist_ok=True)
    model: torch.nn.Module | None = None
    if from_run is not None:  # a run's newest checkpoint, measured with the run's own settings
        model, cfg = _trained_model(Path(from_run), f"--from {from_run}")
    for planned in NOISE.plan(spec, out):  # --steps-before: trained first, in OUT/train
        model = _trained_model(train(planned.cfg).run_dir, "--steps-before")[0]
    if model is None:
        torch.manual_seed(cfg.effective_init_seed)  # a fresh model, built once the tokenizer's vocabulary is known
    base = model_config_for(cfg)
    data = build_data(
        dataclasses.replace(data_config(cfg), eval_batches=1), seq_len=base.max_seq_len,
        micro_batch_size=spec.micro_batch_size, seed=seed, vocab_size=base.vocab_size,
    )
    if model is None:
        model = build_model(model_config_for(cfg, data.tokenizer.vocab_size))
    device = resolve_device(cfg.device)
    model = model.to(device).train()
    meas = measure(model, [data.train.next() for _ in range(micro_batches)], device, sample, seed)
    scalars = save_measurement(out / MEASUREMENT_FILE, meas)
    write_experiment(out, {"kind": NOISE.kind, "command": command, "spec": spec.to_dict(), "runs": [],
                           "what": f"{cfg.preset} on {cfg.data}", "measurement": scalars})
    return NOISE.write(out, NOISE.analyse(out))


def _figures(meas: Measurement, batch_sizes: list[int], out: Path, eps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for b in batch_sizes:
        for noise, style in (("uniform", "-"), ("gaussian", "--")):
            curve = loss_decrease(meas, b, P_GRID, eps, noise)
            scale = curve.max() if curve.max() > 0 else 1.0
            (line,) = ax.plot(P_GRID, curve / scale, style, label=f"batch {b}, {noise}")
            j = int(np.argmax(curve))
            ax.plot(P_GRID[j], 1.0, marker="*", ms=11, color=line.get_color())
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="p", ylabel="D(p) / max", title="predicted first-order loss decrease D(p); *: p*")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "noise_dp.png", dpi=120)
    plt.close(fig)

    # The theory's map: optimal p over (|mu| / eps, sigma / |mu|), with the measured coordinates on it.
    ratios = np.logspace(-1, 3, 60)
    scales = np.logspace(-2, 6, 80)
    best = np.empty((ratios.size, scales.size))
    for j, scale in enumerate(scales):
        mu = scale * eps
        values = update_limit(P_GRID[None, :], mu, ratios[:, None] * mu, eps, "uniform")
        best[:, j] = P_GRID[np.argmax(values, axis=1)]
    fig, ax = plt.subplots(figsize=(7, 5))
    image = ax.pcolormesh(scales, ratios, best, cmap="viridis", shading="auto")
    fig.colorbar(image, ax=ax, label="optimal p (uniform noise, long-averaging limit)")
    rng = np.random.default_rng(0)
    pick = rng.choice(meas.mu.size, size=min(3000, meas.mu.size), replace=False)
    mu = np.abs(meas.signal[pick])
    keep = mu > 0
    # Colours that stand out on viridis (no yellow or teal), each with a dark edge.
    colours = ("#ff3030", "#ffffff", "#ff9f1c", "#ff66cc", "#000000", "#9b5de5")
    for i, b in enumerate(batch_sizes):
        sigma = meas.sigma_at(b)[pick]
        ax.scatter(mu[keep] / eps, sigma[keep] / mu[keep], s=7, alpha=0.6, color=colours[i % len(colours)],
                   edgecolors="#202020", linewidths=0.3, marker="os^Dv<>"[i % 7], label=f"batch {b}")
    unplaced = int((~keep).sum())
    ax.text(0.01, 0.01, f"{unplaced} of {pick.size} sampled coordinates have no resolvable mean (not shown)",
            transform=ax.transAxes, fontsize=7, color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 2})
    ax.set(xscale="log", yscale="log", xlabel="|mu| / eps", ylabel="sigma / |mu|",
           xlim=(scales[0], scales[-1]), ylim=(ratios[0], ratios[-1]),
           title="measured coordinates on the theory's map")
    ax.legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    fig.savefig(out / "noise_map.png", dpi=120)
    plt.close(fig)
