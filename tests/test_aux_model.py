"""The reference weighting's auxiliary model in the lite host: a path, or a benchmark keyword;
a method given the benchmark's retain model is 'privileged', never a label-free baseline."""

import pytest

from atwu_plugin.hosts.lite_cell import provide_host_inputs, resolve_aux_model
from atwu_plugin.leaderboard.headline import method_roles
from atwu_plugin.leaderboard.paired import strongest_baseline


class Bench:
    aux_model_path = "/zoo/base"
    retain_model_path = "/zoo/retain"


class NoRetain:
    aux_model_path = "/zoo/base"
    retain_model_path = None


def test_keywords_and_paths():
    assert resolve_aux_model(None, Bench()) == "/zoo/base"
    assert resolve_aux_model("???", Bench()) == "/zoo/base"
    assert resolve_aux_model("benchmark:base", Bench()) == "/zoo/base"
    assert resolve_aux_model("benchmark:retain", Bench()) == "/zoo/retain"
    assert resolve_aux_model("/my/model", Bench()) == "/my/model"


def test_bad_keyword_and_missing_model_are_named():
    with pytest.raises(ValueError, match=r"aux_model_path='benchmark:retrain': expected a path or one of "
                                         r"benchmark:base, benchmark:retain"):
        resolve_aux_model("benchmark:retrain", Bench())
    with pytest.raises(ValueError, match=r"benchmark NoRetain has no such model \(retain_model_path is None\)"):
        resolve_aux_model("benchmark:retain", NoRetain())


def test_no_base_model_is_none_by_default_and_an_error_by_name():
    # a benchmark without one (rwku_real): every token-weighted trainer asks the host, only a
    # weighter that needs the model (reference) stops, in the trainer, with its own error
    class NoBase:
        aux_model_path = None

    assert resolve_aux_model(None, NoBase()) is None
    with pytest.raises(ValueError, match=r"'benchmark:base': benchmark NoBase has no such model"):
        resolve_aux_model("benchmark:base", NoBase())


def test_host_fills_the_retain_model_for_the_reference_trainer():
    cfg = provide_host_inputs({"handler": "TokenWeightedUnlearn", "method_args": {
        "weighter": {"name": "reference"}, "aux_model_path": "benchmark:retain"}}, Bench(), None)
    assert cfg["method_args"]["aux_model_path"] == "/zoo/retain"


def _run(method, trainer, value, overrides=None):
    point = {"step": 0, "forget_specific_prob": 1.0, "kl_to_retain": 0.0}
    return {"method": method, "seed": 0, "metrics": {"kl_to_retain": value},
            "config": {"method": {"name": method, "trainer": trainer, "overrides": overrides or {}}},
            "trajectory": [point]}


def test_retain_model_aux_is_privileged_and_not_the_strongest_baseline():
    bench = {"runs": [_run("ATWU", "ATWU", 1.0), _run("NPO", "TW_NPO", 2.0),
                      _run("Reference", "TW_Reference", 1.5),
                      _run("Reference-retain", "TW_Reference", 0.1, {"method_args.aux_model_path": "benchmark:retain"})]}
    roles = method_roles(bench)
    assert roles["Reference"] == "heuristic" and roles["Reference-retain"] == "privileged"
    assert strongest_baseline(bench, "kl_to_retain")[0] == "Reference"
