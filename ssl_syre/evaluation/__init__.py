"""Evaluation of frozen features: weighted kNN, linear probe and collapse measures."""

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

__all__ = [
    "collapse_metrics",
    "dead_unit_fraction",
    "knn_classify",
    "knn_predictions",
    "knn_search",
    "linear_probe",
    "low_rankness",
    "plot_spectra",
    "rankme",
    "singular_value_spectrum",
]
