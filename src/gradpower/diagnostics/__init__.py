"""Diagnostics: gradient statistics of a run and the p they predict (observing gradients, never changing them)."""

from .gradstats import Measurement, MicroBatchProbe, MovingAverageProbe
from .predict import P_GRID, loss_decrease, predict_p, summary_rows

__all__ = ["P_GRID", "Measurement", "MicroBatchProbe", "MovingAverageProbe", "loss_decrease", "predict_p",
           "summary_rows"]
