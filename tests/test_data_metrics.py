"""GLUE metrics against values worked out by hand (no scipy/sklearn)."""

import math

import numpy as np
import pytest

from adamix_jax.data.metrics import (accuracy, compute_metrics, f1,
                                     matthews_corrcoef, pearson, spearman)
from adamix_jax.data.tasks import get_task

# predictions / labels with tp=2, fp=1, fn=1, tn=1.
PRED = np.array([1, 1, 0, 0, 1])
GOLD = np.array([1, 0, 1, 0, 1])


def test_accuracy():
  assert accuracy(PRED, GOLD) == pytest.approx(3 / 5)


def test_f1_of_class_one():
  # 2 tp / (2 tp + fp + fn) = 4 / 6.
  assert f1(PRED, GOLD) == pytest.approx(2 / 3)
  # Class 0: tp=1, fp=1, fn=1 -> 2/4; checks `positive` is honoured.
  assert f1(PRED, GOLD, positive=0) == pytest.approx(1 / 2)


def test_f1_is_zero_without_positives():
  assert f1(np.zeros(4), np.zeros(4)) == 0.0


def test_binary_mcc():
  # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2-1)/sqrt(3*3*2*2).
  assert matthews_corrcoef(PRED, GOLD) == pytest.approx(1 / 6)
  assert matthews_corrcoef(GOLD, GOLD) == pytest.approx(1.0)
  assert matthews_corrcoef(1 - GOLD, GOLD) == pytest.approx(-1.0)


def test_mcc_of_constant_prediction_is_zero():
  assert matthews_corrcoef(np.ones(5), GOLD) == 0.0


def test_multiclass_mcc():
  gold = np.array([0, 0, 1, 1, 2, 2])
  pred = np.array([0, 1, 1, 1, 2, 0])
  # c=4 correct of s=6; true counts t=(2,2,2), predicted p=(2,3,1):
  # (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24-12) / sqrt(22*24).
  assert matthews_corrcoef(pred, gold) == pytest.approx(12 / math.sqrt(528))


def test_pearson():
  # deviations (-1.5,-.5,.5,1.5) and (-3,-1,0,4): 11 / sqrt(5 * 26).
  assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))


def test_pearson_of_constant_is_nan():
  assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_spearman_uses_average_ranks_for_ties():
  # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5).
  assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(
      4.5 / math.sqrt(22.5))
  # Ranking with ties broken by position instead would give 0.8 here.
  assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) != pytest.approx(0.8)


def test_spearman_is_one_for_monotone_nonlinear():
  assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)
  assert pearson([1, 2, 3, 4], [1, 8, 27, 64]) < 0.99


def test_compute_metrics_mrpc_combined():
  result = compute_metrics(get_task('mrpc'), PRED, GOLD)
  assert result == pytest.approx({'accuracy': 0.6, 'f1': 2 / 3,
                                  'combined': (0.6 + 2 / 3) / 2})


def test_compute_metrics_stsb_and_cola_keys():
  stsb = compute_metrics(get_task('stsb'), np.array([1., 2, 3, 4]),
                         np.array([2., 4, 5, 9]))
  assert set(stsb) == {'pearson', 'spearman', 'combined'}
  assert stsb['spearman'] == pytest.approx(1.0)
  assert stsb['combined'] == pytest.approx((stsb['pearson'] + 1.0) / 2)
  assert compute_metrics(get_task('cola'), PRED, GOLD) == pytest.approx(
      {'mcc': 1 / 6})


def test_padding_rows_are_excluded_by_weights():
  # Two padding rows, both "correct" (0 == 0): counting them would give 5/7.
  pred = np.r_[PRED, 0, 0]
  gold = np.r_[GOLD, 0, 0]
  weights = np.r_[np.ones(5), 0, 0]
  assert compute_metrics(get_task('sst2'), pred, gold, weights) == pytest.approx(
      {'accuracy': 3 / 5})
  assert compute_metrics(get_task('sst2'), pred, gold) == pytest.approx(
      {'accuracy': 5 / 7})


@pytest.mark.parametrize('weights', [np.full(5, 0.5), np.ones(4)])
def test_bad_weights_raise(weights):
  with pytest.raises(ValueError, match='weights'):
    compute_metrics(get_task('sst2'), PRED, GOLD, weights)


def test_mismatched_lengths_raise():
  with pytest.raises(ValueError, match='equal length'):
    accuracy(PRED, GOLD[:3])
