"""The reference side of bench/svm_reference.ts: scikit-learn's LinearSVC on
the same L2-normalised features, as FAIR's svm_tools runs it (OpenSelfSup /
DetCo benchmarks/svm_tools): per class, class_weight {1: 2, -1: 1}, the cost
chosen by cross_val_score(cv=3, scoring='average_precision'), refit, test AP
by svm_helper's interpolated AP. Reads the features the TypeScript side wrote
and prints one JSON line per class. Debian's python3-sklearn; never a runtime
dependency."""
import json
import sys
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC

warnings.simplefilter('ignore', ConvergenceWarning)


def normalise(x):
    # svm_tools' rule: x / (||x|| + 1e-5)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def interpolated_ap(targets, scores):
    order = np.argsort(-scores, kind='stable')
    tp = np.cumsum(targets[order] == 1)
    fp = np.cumsum(targets[order] != 1)
    rec = tp / max(1, int((targets == 1).sum()))
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def main():
    spec = json.loads(sys.argv[1])
    dim = spec['dim']
    xtr = normalise(np.fromfile(spec['train'], dtype=np.float32).reshape(-1, dim).astype(np.float64))
    xte = normalise(np.fromfile(spec['test'], dtype=np.float32).reshape(-1, dim).astype(np.float64))
    ytr = np.fromfile(spec['trainLabels'], dtype=np.int32)
    yte = np.fromfile(spec['testLabels'], dtype=np.int32)
    costs = spec['costs']
    for k in range(spec['classes']):
        y = np.where(ytr == k, 1, -1)
        t = np.where(yte == k, 1, -1)
        make = lambda c: LinearSVC(C=c, class_weight={1: 2, -1: 1}, intercept_scaling=1.0, penalty='l2',
                                   loss='squared_hinge', tol=1e-4, dual=True, max_iter=2000)
        cv = [float(cross_val_score(make(c), xtr, y, cv=3, scoring='average_precision').mean()) for c in costs]
        best = int(np.argmax(cv))
        chosen = make(costs[best]).fit(xtr, y)
        ours = make(spec['ourCosts'][k]).fit(xtr, y)
        print(json.dumps({
            'class': k,
            'cost': costs[best],
            'cvAP': 100 * cv[best],
            'testAP': 100 * interpolated_ap(t, chosen.decision_function(xte)),
            'testAPAtOurCost': 100 * interpolated_ap(t, ours.decision_function(xte)),
        }), flush=True)


main()
