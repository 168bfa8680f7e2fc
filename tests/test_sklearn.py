"""TabularFlow as a scikit-learn estimator: the estimator checks, Pipeline and GridSearchCV.

scikit-learn is a test dependency only; the library never imports it (`__sklearn_tags__` does,
and only scikit-learn calls that).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")

from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from flowcli import FlowcliError, TabularFlow
from flowcli.errors import FlowcliWarning, NotFittedError
from flowcli.model import MIN_ROWS

FAST = {"epochs": 2, "hidden": 8, "layers": 2, "patience": 1, "device": "cpu"}

# Checks that cannot pass as written, each for a reason that is not a defect of the estimator.
EXPECTED_FAILED_CHECKS = {
    "check_estimators_unfitted": (
        "before fit, TabularFlow raises flowcli.errors.NotFittedError, a ValueError and an AttributeError "
        "like scikit-learn's; the check demands scikit-learn's own class, which the library does not import "
        "(test_unfitted_errors_are_what_sklearn_catches covers the behaviour)"
    ),
    "check_fit2d_1sample": (
        f"a flow needs at least MIN_ROWS={MIN_ROWS} rows; fitting 1 row raises DataError (a ValueError, as the "
        "check wants), but its message counts rows, not scikit-learn's 'n_samples = 1' wording the check matches"
    ),
}


def gaussian(rows: int = 300, seed: int = 0) -> np.ndarray:
    """A correlated 3-D Gaussian, (rows, 3)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]]) + [1, -2, 5]


with warnings.catch_warnings():  # not inheriting BaseEstimator is the point: the library never imports sklearn
    warnings.filterwarnings("ignore", "Estimator TabularFlow does not inherit", UserWarning)
    sklearn_checks = parametrize_with_checks(
        [TabularFlow(**FAST)], expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS
    )


@sklearn_checks
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_the_library_does_not_import_sklearn():
    code = "import sys, flowcli.model, flowcli.files; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unfitted_errors_are_what_sklearn_catches():
    model = TabularFlow(**FAST)
    for call in (model.score_samples, model.decision_function, model.predict, model.score):
        with pytest.raises(NotFittedError, match="not fitted yet") as caught:
            call(gaussian(20))
        assert all(isinstance(caught.value, kind) for kind in (ValueError, AttributeError, FlowcliError))
    with pytest.raises(NotFittedError):
        model.sample(3)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(model)
    check_is_fitted(model.fit(gaussian()))


def test_numpy_input_scores_and_predicts():
    x = gaussian()
    model = TabularFlow(**FAST).fit(x)
    assert model.n_features_in_ == 3 and not hasattr(model, "feature_names_in_")
    assert model.columns_ == ["x0", "x1", "x2"]
    log_p = model.score_samples(x[:50])
    assert log_p.shape == (50,) and np.isfinite(log_p).all()
    np.testing.assert_array_equal(model.decision_function(x[:50]), model.anomaly_scores(x[:50], log_p))
    assert set(np.unique(model.predict(x[:50]))) <= {0, 1}
    assert model.score(x[:50]) == pytest.approx(log_p.mean())
    with pytest.raises(ValueError, match="X has 2 features, but TabularFlow is expecting 3 features"):
        model.score_samples(x[:, :2])
    with pytest.raises(ValueError, match="X has 4 features"):  # an extra array column is not silently ignored
        model.score_samples(np.hstack([x, x[:, :1]]))


def test_a_dataframe_fit_records_feature_names():
    table = pd.DataFrame(gaussian(), columns=["a", "b", "c"]).assign(id=[f"r{i}" for i in range(300)])
    with pytest.warns(FlowcliWarning, match="left out 1 column"):
        model = TabularFlow(**FAST).fit(table)
    assert model.n_features_in_ == 4
    assert model.feature_names_in_.dtype == object and list(model.feature_names_in_) == ["a", "b", "c", "id"]
    model.fit(gaussian())  # a refit on an array forgets the names
    assert model.n_features_in_ == 3 and not hasattr(model, "feature_names_in_")


def test_params_round_trip_and_clone():
    model = TabularFlow(**FAST, seed=3)
    assert repr(model) == "TabularFlow(layers=2, hidden=8, epochs=2, patience=1, seed=3, device='cpu')"
    assert TabularFlow().set_params(**model.get_params()).get_params() == model.get_params()
    fitted = model.fit(gaussian())
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "n_features_in_")
    with pytest.raises(ValueError, match="no parameter width"):
        model.set_params(width=3)


def test_a_fixed_seed_is_deterministic():
    x = gaussian()
    first, second = TabularFlow(**FAST, seed=5).fit(x), TabularFlow(**FAST, seed=5).fit(x)
    np.testing.assert_array_equal(first.score_samples(x), second.score_samples(x))
    pd.testing.assert_frame_equal(first.sample(n_samples=20, random_state=1), second.sample(20, seed=1))


def test_sample_takes_sklearn_names():
    model = TabularFlow(**FAST).fit(gaussian())
    pd.testing.assert_frame_equal(model.sample(n_samples=7, random_state=2), model.sample(7, seed=2))
    pd.testing.assert_frame_equal(model.sample(7, random_state=2), model.sample(n=7, seed=2))
    assert len(model.sample()) == 1  # scikit-learn's default n_samples
    with pytest.raises(TypeError, match="give n or n_samples, not both"):
        model.sample(3, n_samples=3)
    with pytest.raises(TypeError, match="give seed or random_state, not both"):
        model.sample(3, seed=1, random_state=1)


def test_a_pipeline_ends_in_the_flow():
    x = gaussian()
    pipe = Pipeline([("scale", StandardScaler()), ("flow", TabularFlow(**FAST))]).fit(x)
    log_p = pipe.score_samples(x)  # in the scaled units
    assert log_p.shape == (300,) and np.isfinite(log_p).all()
    assert pipe.score(x) == pytest.approx(log_p.mean())
    assert pipe.predict(x).shape == (300,)


def test_grid_search_picks_hidden_by_held_out_log_likelihood():
    x = gaussian(rows=240, seed=1)
    search = GridSearchCV(TabularFlow(**{**FAST, "epochs": 5}), {"hidden": [8, 16]}, cv=3).fit(x)
    assert search.best_params_["hidden"] in (8, 16)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert np.isfinite(search.best_score_)
    assert search.best_estimator_.hidden == search.best_params_["hidden"]
    assert np.isfinite(search.score(gaussian(rows=50, seed=2)))
