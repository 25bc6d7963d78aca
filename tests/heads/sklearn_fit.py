"""scikit-learn's logistic regression on the features safetyj fitted: the reference
of tests/head_fit.rs. Reads {"x": rows, "y": labels, "c": C} from stdin and prints
{"coef": [...], "intercept": b, "version": sklearn's}. Pinned in .ci/run."""

import json
import sys

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

problem = json.load(sys.stdin)
model = LogisticRegression(C=problem["c"], solver="lbfgs", tol=1e-12, max_iter=100000)
model.fit(np.array(problem["x"], dtype=np.float64), np.array(problem["y"], dtype=bool))
json.dump(
    {
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
        "version": sklearn.__version__,
    },
    sys.stdout,
)
