"""Evaluation of frozen features (weighted kNN, linear probe, collapse) and of the weights
(dead, duplicated and low-rank units: `diagnose_model`)."""

from ssl_syre.evaluation.collapse import (
    collapse_metrics,
    dead_unit_fraction,
    low_rankness,
    plot_spectra,
    rankme,
    singular_value_spectrum,
)
from ssl_syre.evaluation.knn import knn_classify, knn_predictions, knn_search
from ssl_syre.evaluation.linear import linear_probe
from ssl_syre.evaluation.symmetry import SymmetryReport, diagnose_model

__all__ = [
    "SymmetryReport",
    "collapse_metrics",
    "dead_unit_fraction",
    "diagnose_model",
    "knn_classify",
    "knn_predictions",
    "knn_search",
    "linear_probe",
    "low_rankness",
    "plot_spectra",
    "rankme",
    "singular_value_spectrum",
]
