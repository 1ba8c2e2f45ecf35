"""The command line keeps svmlight data sparse from reading to predicting (issue 17).

A slice of news20 (sparse tf-idf text, 62,061 features) is trained on, evaluated and predicted
through `softmaxkit.cli.main` with every way scipy.sparse has to densify a matrix made to raise, so
nothing densifies it (the estimator's own memory, against scikit-learn's, is measured in bytes in
tests/test_sparse.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from softmaxkit.cli import main
from softmaxkit.linear_model import SoftmaxRegression

NEWS20 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "news20" / "news20.svm.gz"
N_FEATURES = 62061  # news20's vocabulary; a slice's highest index may be lower, so it is given

pytestmark = pytest.mark.skipif(not NEWS20.is_file(), reason=f"needs {NEWS20}")


@pytest.fixture(scope="module")
def news20_slice(tmp_path_factory) -> Path:
    """800 documents of news20 drawn at random (seeded; about 40 of each of the 20 classes), as a plain .svm file."""
    path = tmp_path_factory.mktemp("news20") / "news20-slice.svm"
    with gzip.open(NEWS20, "rt") as file:
        lines = file.readlines()
    chosen = np.sort(np.random.default_rng(0).choice(len(lines), size=800, replace=False))
    path.write_text("".join(lines[i] for i in chosen))
    return path


@pytest.fixture
def no_densifying(monkeypatch):
    """Every scipy.sparse route to a dense array raises for a data-sized matrix (above 10^6 entries).

    Small ones are left alone: scikit-learn's confusion_matrix densifies a classes x classes one.
    """
    import scipy.sparse._base
    import scipy.sparse._compressed
    import scipy.sparse._coo

    def refusing(original):
        def method(self, *args, **kwargs):
            if self.shape[0] * self.shape[1] > 10**6:
                raise AssertionError(f"a sparse {self.shape} matrix was densified")
            return original(self, *args, **kwargs)

        return method

    for cls in (scipy.sparse._base._spbase, scipy.sparse._compressed._cs_matrix, scipy.sparse._coo._coo_base):
        for name in ("toarray", "todense"):
            if name in vars(cls):
                monkeypatch.setattr(cls, name, refusing(vars(cls)[name]))


def test_densifying_is_refused_by_the_fixture(no_densifying):
    import scipy.sparse

    with pytest.raises(AssertionError, match="densified"):
        scipy.sparse.random(2000, 1000, density=1e-3, format="csr").toarray()
    assert scipy.sparse.csr_matrix(np.eye(3)).toarray().shape == (3, 3)


def test_train_evaluate_predict_on_sparse_text(news20_slice, tmp_path, capsys, no_densifying):
    pytest.importorskip("matplotlib")
    X, y = load_svmlight_file(str(news20_slice), n_features=N_FEATURES)
    out = tmp_path / "run"
    assert main(["train", str(news20_slice), "--out", str(out), "--max-iter", "30", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert "sparse features are used as they are" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["standardized"] is False
    assert metrics["train"]["accuracy"] > 0.9  # 640 training documents, 62k features: a linear model fits them

    model = SoftmaxRegression.load(out / "model.npz")
    assert model.n_features_in_ >= X.shape[1] - 1000  # the file's highest index, at most the vocabulary
    assert main(["evaluate", str(out / "model.npz"), str(news20_slice)]) == 0
    assert "accuracy" in capsys.readouterr().out
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(out / "model.npz"), str(news20_slice), "--out", str(predictions)]) == 0
    lines = predictions.read_text().splitlines()
    assert len(lines) == X.shape[0] + 1
    expected = model.predict(X[:, : model.n_features_in_])
    assert np.array_equal(np.array(lines[1:], dtype=float).astype(int), expected.astype(int))
