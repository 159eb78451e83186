"""Plugin discovery and the OpenUnlearning glue, without OpenUnlearning.

A stand-in for OU's registry modules (``trainer``, ``data``, ``evals``) is written into a
temporary directory: these tests check our side of the contract (OU's module names,
registry dicts and ``_register_*`` functions), not OU itself; tests/openunlearning runs the
real thing.
"""

import os
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from atwu_plugin import plugins
from atwu_plugin.hosts import openunlearning_registry as ou_registry
from atwu_plugin.registry import REGISTRIES

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "atwu_plugin" / "configs"
OU_ROOT = os.environ.get("OPEN_UNLEARNING_ROOT") or "/tmp/ou"
TW_BASELINES = (
    "TW_GA TW_GradDiff TW_NPO TW_SimNPO TW_WGA TW_SatImp TW_TokenUnlearnHard TW_TokenUnlearnSoft "
    "TW_Reference TW_Oracle TW_RetainFrequency TW_RetainWordFrequency TW_RetainWordContext TW_SameToken"
).split()


# ---- fixtures ---------------------------------------------------------------------------
class FakeEntryPoint:
    """The subset of importlib.metadata.EntryPoint that plugins.py uses."""

    def __init__(self, name, value, group, dist_name="fake-dist", loader=None):
        self.name, self.value, self.group = name, value, group
        self.dist = type("D", (), {"metadata": {"Name": dist_name}, "version": "9.9"})()
        self._loader = loader

    def load(self):
        if self._loader is not None:
            return self._loader()
        module, _, attr = self.value.partition(":")
        obj = __import__(module, fromlist=["_"])
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj


@pytest.fixture
def entry_points(monkeypatch):
    """Replace the installed entry points of the open_unlearning.* groups by a list."""
    eps = []

    def fake(group):
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(plugins, "_entry_points", fake)
    return eps


@pytest.fixture
def clean_local(isolated_plugins, monkeypatch):
    """No local plugin modules, nothing loaded yet, and the one registry restored afterwards."""
    monkeypatch.delenv(plugins.ENV_MODULES, raising=False)


FAKE_OU = {
    "trainer/__init__.py": """
        from transformers import Trainer
        TRAINER_REGISTRY = {}
        def _register_trainer(cls):
            TRAINER_REGISTRY[cls.__name__] = cls
        class GradDiff(Trainer):
            pass
        _register_trainer(GradDiff)
    """,
    "trainer/base.py": """
        from transformers import Trainer
        class FinetuneTrainer(Trainer):
            def __init__(self, evaluators=None, template_args=None, *args, **kwargs):
                self.evaluators = evaluators
                self.template_args = template_args
                super().__init__(*args, **kwargs)
            def evaluate(self, *args, **kwargs):
                return {"fake_ou_evaluate": 1.0}
    """,
    "trainer/unlearn/__init__.py": "",
    "trainer/unlearn/base.py": """
        from trainer.base import FinetuneTrainer
        class UnlearnTrainer(FinetuneTrainer):
            def _prepare_deepspeed(self, model):
                return "ou-deepspeed"
            def prediction_step(self, *args, **kwargs):
                return "ou-prediction-step"
    """,
    "data/__init__.py": """
        DATASET_REGISTRY = {}
        COLLATOR_REGISTRY = {}
        def _register_data(cls):
            DATASET_REGISTRY[cls.__name__] = cls
        def _register_collator(cls):
            COLLATOR_REGISTRY[cls.__name__] = cls
    """,
    "evals/__init__.py": """
        EVALUATOR_REGISTRY = {}
        def _register_evaluator(cls):
            EVALUATOR_REGISTRY[cls.__name__] = cls
        import evals.metrics
    """,
    "evals/metrics/__init__.py": """
        METRICS_REGISTRY = {}
        def _register_metric(metric):
            METRICS_REGISTRY[metric.name] = metric
    """,
    "evals/metrics/base.py": """
        class UnlearningMetric:
            def __init__(self, name, metric_fn):
                self.name = name
                self._metric_fn = metric_fn
            def evaluate(self, model, **kwargs):
                return self._metric_fn(model, **kwargs)
    """,
}


@pytest.fixture
def fake_ou(tmp_path, monkeypatch):
    src = tmp_path / "ou_src"
    for rel, text in FAKE_OU.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    names = ("trainer", "data", "evals")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in names}
    for k in saved:
        del sys.modules[k]
    monkeypatch.syspath_prepend(str(src))
    yield src
    for k in [k for k in sys.modules if k.split(".")[0] in names]:
        del sys.modules[k]
    sys.modules.update(saved)


def _placeholder_trainer():
    from atwu_plugin.trainers.base import PluginUnlearnTrainer

    class PlaceholderMethod(PluginUnlearnTrainer):
        def unlearning_loss(self, model, inputs):
            return 0.0, None

    return PlaceholderMethod


# ---- entry points and local modules -----------------------------------------------------
def test_entry_point_class_is_discovered(entry_points, clean_local):
    entry_points.append(FakeEntryPoint("MyTrainer", "collections:OrderedDict", "open_unlearning.trainers"))
    entry_points.append(FakeEntryPoint("my_metric", "os.path:join", "open_unlearning.metrics"))
    found = plugins.discover()
    import collections

    assert found["trainers"]["MyTrainer"].obj is collections.OrderedDict
    assert "fake-dist" in found["trainers"]["MyTrainer"].source
    assert found["metrics"]["my_metric"].obj is os.path.join  # a function is the metric itself


def test_entry_point_callable_hook_returns_classes(entry_points, clean_local):
    class A:
        pass

    class B:
        pass

    entry_points.append(FakeEntryPoint("hook", "x:y", "open_unlearning.datasets", loader=lambda: (lambda: [A, B])))
    found = plugins.discover(["datasets"])
    assert set(found["datasets"]) == {"A", "B"}


def test_real_entry_points_api_is_used():
    # the stdlib call the fixture replaces must exist and accept group=
    assert isinstance(plugins._entry_points("open_unlearning.no_such_group"), list)
    assert hasattr(metadata, "entry_points")


def test_broken_entry_point_names_itself_and_its_package(entry_points, clean_local):
    entry_points.append(
        FakeEntryPoint("Broken", "no_such_module_xyz:Thing", "open_unlearning.trainers", dist_name="broken-pkg")
    )
    with pytest.raises(plugins.PluginLoadError) as err:
        plugins.discover()
    msg = str(err.value)
    assert "'Broken'" in msg and "broken-pkg" in msg and "no_such_module_xyz" in msg and "open_unlearning.trainers" in msg


def test_two_plugins_same_name_is_an_error(entry_points, clean_local):
    entry_points.append(FakeEntryPoint("Same", "collections:OrderedDict", "open_unlearning.trainers", dist_name="a"))
    entry_points.append(FakeEntryPoint("Same", "collections:Counter", "open_unlearning.trainers", dist_name="b"))
    with pytest.raises(plugins.PluginLoadError, match="provided twice"):
        plugins.discover()


def test_local_module_by_path_and_by_name(tmp_path, monkeypatch, entry_points, clean_local):
    (tmp_path / "my_local_method.py").write_text(
        textwrap.dedent(
            """
            from atwu_plugin.plugins import register_trainer, register_metric

            @register_trainer
            class LocalMethod:
                pass

            @register_metric(name="local_metric")
            def metric(model, **kwargs):
                return {"agg_value": 1.0}
            """
        )
    )
    (tmp_path / "pkg_method.py").write_text(
        "from atwu_plugin.plugins import register_collator\n@register_collator\nclass LocalCollator:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV_MODULES, f"{tmp_path / 'my_local_method.py'}, pkg_method")
    found = plugins.discover()
    assert "LocalMethod" in found["trainers"]
    assert "local_metric" in found["metrics"]
    assert "LocalCollator" in found["collators"]
    # imported once: a second discovery does not re-execute (no "provided twice")
    assert set(plugins.discover()["trainers"]) == {"LocalMethod"}


def test_local_module_failure_names_the_variable(monkeypatch, entry_points, clean_local):
    monkeypatch.setenv(plugins.ENV_MODULES, "no_such_plugin_module_xyz")
    with pytest.raises(plugins.PluginLoadError, match=f"no_such_plugin_module_xyz.*{plugins.ENV_MODULES}"):
        plugins.discover()
    monkeypatch.setenv(plugins.ENV_MODULES, "/nonexistent/dir/plugin.py")
    with pytest.raises(plugins.PluginLoadError, match="no such file"):
        plugins.discover()


def test_weighter_and_loss_entry_points_feed_the_one_registry(entry_points, clean_local):
    from atwu_plugin.losses.forget import FORGET_LOSSES
    from atwu_plugin.weighting import WEIGHTERS, TokenWeighter, build_weighter

    class HalfWeighter(TokenWeighter):
        def compute(self, inputs):
            return inputs.labels.new_full(inputs.labels.shape, 0.5, dtype=float)

    class MyLoss:
        pass

    entry_points += [FakeEntryPoint("half", "x", "atwu_plugin.weighters", loader=lambda: HalfWeighter),
                     FakeEntryPoint("my_loss", "x", "atwu_plugin.forget_losses", loader=lambda: MyLoss)]
    assert plugins.ENTRY_POINT_GROUPS["weighters"] == "atwu_plugin.weighters"
    assert plugins.ENTRY_POINT_GROUPS["trainers"] == "open_unlearning.trainers"  # OU's kinds keep OU's groups
    found = plugins.load_plugins()
    assert found["weighters"]["half"].obj is HalfWeighter and "fake-dist" in found["weighters"]["half"].source
    assert WEIGHTERS.get("half") is HalfWeighter and isinstance(build_weighter("half"), HalfWeighter)
    assert FORGET_LOSSES.get("my_loss") is MyLoss


def test_plugin_cannot_take_a_builtin_name(entry_points, clean_local):
    class NotWGA:
        pass

    entry_points.append(FakeEntryPoint("wga", "x", "atwu_plugin.weighters", dist_name="rogue", loader=lambda: NotWGA))
    with pytest.raises(plugins.PluginLoadError, match="token weighter 'wga' from entry point .*rogue.* would replace"):
        plugins.load_plugins()


def test_local_weighter_decorator_takes_a_name(tmp_path, monkeypatch, entry_points, clean_local):
    (tmp_path / "my_weighter.py").write_text(textwrap.dedent(
        """
        from atwu_plugin.plugins import register_weighter
        from atwu_plugin.weighting import TokenWeighter

        @register_weighter("mine")
        class MyWeighter(TokenWeighter):
            pass
        """))
    found = plugins.load_plugins(modules=str(tmp_path / "my_weighter.py"))
    assert set(found["weighters"]) == {"mine"}
    assert REGISTRIES["weighters"].get("mine").__name__ == "MyWeighter"


def test_config_packages_from_entry_points(entry_points):
    entry_points.append(FakeEntryPoint("x", "last_token_ga.configs", "open_unlearning.configs"))
    assert plugins.config_packages() == ["last_token_ga.configs"]


# ---- OpenUnlearning registration (stand-in OU) -------------------------------------------
def test_no_openunlearning_is_a_silent_noop(clean_local, entry_points):
    for name in ("trainer", "data", "evals"):
        assert name not in sys.modules or not hasattr(sys.modules[name], "TRAINER_REGISTRY")
    assert ou_registry.register_into_openunlearning() == {}
    assert ou_registry.openunlearning_modules(import_modules=False) is None


def test_auto_mode_does_not_import_unrelated_modules(tmp_path, monkeypatch, clean_local, entry_points):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("trainer", None)
    try:
        assert ou_registry.register_into_openunlearning() == {}
    finally:
        sys.modules.pop("trainer", None)


def test_register_into_fake_openunlearning(fake_ou, entry_points, clean_local, monkeypatch):
    placeholder = _placeholder_trainer()

    class MyDataset:
        pass

    class MyEvaluator:
        pass

    def my_metric(model, **kwargs):
        return {"agg_value": 0.5}

    entry_points += [
        FakeEntryPoint("PlaceholderMethod", "x", "open_unlearning.trainers", loader=lambda: placeholder),
        FakeEntryPoint("MyDataset", "x", "open_unlearning.datasets", loader=lambda: MyDataset),
        FakeEntryPoint("MyEvaluator", "x", "open_unlearning.evaluators", loader=lambda: MyEvaluator),
        FakeEntryPoint("my_metric", "x", "open_unlearning.metrics", loader=lambda: my_metric),
    ]
    done = ou_registry.register_into_openunlearning()  # auto mode: `trainer` resolves to an OU-shaped src/
    assert done == {
        "trainers": ["ATWU", "PlaceholderMethod", "PluginRMU", "TokenWeightedUnlearn"],  # this package's and the plugins'
        "datasets": ["MyDataset"],
        "evaluators": ["MyEvaluator"],
        "metrics": ["my_metric"],
    }
    import data
    import evals
    import evals.metrics
    import trainer
    from trainer.unlearn.base import UnlearnTrainer

    cls = trainer.TRAINER_REGISTRY["PlaceholderMethod"]
    assert issubclass(cls, placeholder) and issubclass(cls, UnlearnTrainer)
    assert data.DATASET_REGISTRY["MyDataset"] is MyDataset
    assert evals.EVALUATOR_REGISTRY["MyEvaluator"] is MyEvaluator
    metric = evals.metrics.METRICS_REGISTRY["my_metric"]
    assert metric.name == "my_metric" and metric.evaluate(None) == {"agg_value": 0.5}
    # idempotent: nothing new, same objects
    assert ou_registry.register_into_openunlearning() == {}
    assert trainer.TRAINER_REGISTRY["PlaceholderMethod"] is cls
    assert evals.metrics.METRICS_REGISTRY["my_metric"] is metric


def test_plugin_cannot_replace_an_openunlearning_class(fake_ou, entry_points, clean_local, monkeypatch):
    class GradDiff:  # same name as the stand-in OU's own trainer
        pass

    entry_points.append(FakeEntryPoint("GradDiff", "x", "open_unlearning.trainers", loader=lambda: GradDiff))
    with pytest.raises(plugins.PluginLoadError, match="would replace OpenUnlearning's"):
        ou_registry.register_into_openunlearning(import_modules=True)


def test_rebase_mro_and_constructor(fake_ou, tmp_path):
    import torch
    from transformers import TrainingArguments

    from atwu_plugin.hosts.openunlearning import rebase_on_openunlearning
    from trainer.base import FinetuneTrainer
    from trainer.unlearn.base import UnlearnTrainer

    placeholder = _placeholder_trainer()
    rebased = rebase_on_openunlearning(placeholder)
    assert rebase_on_openunlearning(placeholder) is rebased  # cached
    assert rebase_on_openunlearning(rebased) is rebased  # already on OU
    assert rebased.__name__ == placeholder.__name__  # OU registers by __name__
    mro = rebased.__mro__
    from atwu_plugin.trainers.base import PluginUnlearnTrainer
    from transformers import Trainer

    assert mro.index(placeholder) < mro.index(PluginUnlearnTrainer) < mro.index(UnlearnTrainer) < mro.index(FinetuneTrainer) < mro.index(Trainer)
    assert rebased.compute_loss is PluginUnlearnTrainer.compute_loss  # plugin's loss first
    assert rebased.evaluate is FinetuneTrainer.evaluate  # OU's evaluators
    assert rebased.prediction_step is UnlearnTrainer.prediction_step
    assert rebased._prepare_deepspeed is UnlearnTrainer._prepare_deepspeed

    model = torch.nn.Linear(2, 2)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    t = rebased(model=model, args=args, evaluators={"e": 1}, template_args={"t": 2})
    assert t.evaluators == {"e": 1} and t.template_args == {"t": 2}
    assert t.evaluate() == {"fake_ou_evaluate": 1.0}
    import pickle

    assert pickle.loads(pickle.dumps(rebased)) is rebased


# ---- Hydra search path ------------------------------------------------------------------
def test_search_path_plugin_appends_config_dirs(entry_points, monkeypatch):
    from hydra.core.config_search_path import ConfigSearchPath
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    entry_points.append(FakeEntryPoint("x", "third_party.configs", "open_unlearning.configs"))
    calls = []
    monkeypatch.setattr(ou_registry, "register_into_openunlearning", lambda **kw: calls.append(kw) or {})

    from hydra_plugins.atwu_plugin_searchpath import ATWUPluginSearchPathPlugin

    discovered = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(SearchPathPlugin)}
    assert "hydra_plugins.atwu_plugin_searchpath.ATWUPluginSearchPathPlugin" in discovered

    class SP(ConfigSearchPath):
        def __init__(self):
            self.items = []

        def get_path(self):
            return self.items

        def append(self, provider, path, anchor=None):
            self.items.append(type("E", (), {"provider": provider, "path": path})())

        def prepend(self, provider, path, anchor=None):  # pragma: no cover
            self.items.insert(0, type("E", (), {"provider": provider, "path": path})())

    sp = SP()
    ATWUPluginSearchPathPlugin().manipulate_search_path(sp)
    ATWUPluginSearchPathPlugin().manipulate_search_path(sp)  # idempotent
    assert [e.path for e in sp.items] == ["pkg://atwu_plugin.configs", "pkg://third_party.configs"]
    assert len(calls) == 2


def test_hydra_app_composes_plugin_configs(tmp_path):
    """Any Hydra app in the environment finds the plugin's config groups through the
    SearchPathPlugin (needs the package installed: ``hydra_plugins`` must be importable)."""
    from hydra import compose, initialize_config_dir

    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "finetune.yaml").write_text("args:\n  learning_rate: 0.5\n  seed: 0\n")  # stand-in for OU's
    (tmp_path / "config.yaml").write_text("defaults:\n  - trainer: finetune\n  - _self_\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(config_name="config", overrides=["trainer=TW_NPO"])
    assert cfg.trainer.handler == "TokenWeightedUnlearn"
    assert cfg.trainer.method_args.forget_loss.name == "npo"
    assert cfg.trainer.args.learning_rate == 0.5  # inherited from the app's trainer/finetune.yaml


# ---- configs ----------------------------------------------------------------------------
def _trainer_configs():
    return sorted((CONFIG_DIR / "trainer").glob("*.yaml"))


def test_every_method_has_a_trainer_config():
    names = {p.stem for p in _trainer_configs()}
    assert {"ATWU", *TW_BASELINES} <= names


def _token_weighted_configs():
    return [p for p in _trainer_configs() if OmegaConf.load(p).handler != "PluginRMU"]


@pytest.mark.parametrize("path", _trainer_configs(), ids=lambda p: p.stem)
def test_trainer_configs_parse_and_follow_ou_schema(path):
    cfg = OmegaConf.load(path)
    assert cfg.handler in {"TokenWeightedUnlearn", "ATWU", "PluginRMU"}
    assert list(cfg.defaults)[0] == "finetune"  # OU's TrainingArguments defaults
    m = cfg.method_args
    if cfg.handler == "PluginRMU":  # representation-level: no token losses; its options are the trainer's
        import inspect

        from atwu_plugin.trainers.rmu import PluginRMU

        assert set(m) <= set(inspect.signature(PluginRMU.__init__).parameters)
        return
    assert m.retain_loss.name == "nll" and "gamma" in m and "alpha" in m and "normalizer" in m
    assert "name" in m.forget_loss
    if cfg.handler == "TokenWeightedUnlearn":
        assert "name" in m.weighter


def test_trainer_configs_name_registered_components():
    from atwu_plugin.losses.forget import FORGET_LOSSES
    from atwu_plugin.losses.reduce import NORMALIZERS
    from atwu_plugin.losses.retain import RETAIN_LOSSES
    from atwu_plugin.weighting import WEIGHTERS

    for path in _token_weighted_configs():
        m = OmegaConf.load(path).method_args
        assert m.forget_loss.name in FORGET_LOSSES, path.name
        assert m.retain_loss.name in RETAIN_LOSSES, path.name
        assert m.normalizer in NORMALIZERS, path.name
        if "weighter" in m:
            assert m.weighter.name in WEIGHTERS, path.name


def test_all_plugin_configs_parse():
    files = [p for p in CONFIG_DIR.rglob("*.yaml")]
    assert len(files) > 15
    for p in files:
        OmegaConf.load(p)


def test_local_data_config_points_every_dataset_at_the_local_dir():
    cfg = OmegaConf.load(CONFIG_DIR / "local_data" / "default.yaml")
    paths = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "hf_args":
                    paths.append((where, v["path"]))
                else:
                    walk(v, where + [k])

    walk(OmegaConf.to_container(cfg, resolve=False), [])
    assert len(paths) >= 20
    assert {p for _, p in paths} == {"${paths.local_data}"}


def _ou_config_names(group):
    configs = Path(OU_ROOT) / "configs"
    if not configs.is_dir():
        pytest.skip(f"no OpenUnlearning checkout at {OU_ROOT} (set OPEN_UNLEARNING_ROOT) for the collision check")
    root = configs / group
    return {str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")} if root.is_dir() else set()


@pytest.mark.parametrize("group", ["trainer", "model", "experiment", "data", "eval", "collator", "local_data", "peft"])
def test_config_names_do_not_collide_with_openunlearning(group):
    ours = {str(p.relative_to(CONFIG_DIR / group).with_suffix("")) for p in (CONFIG_DIR / group).rglob("*.yaml")} if (CONFIG_DIR / group).is_dir() else set()
    theirs = _ou_config_names(group)
    assert not ours & theirs, f"plugin configs shadowed by OpenUnlearning's: {sorted(ours & theirs)}"


# ---- CLI --------------------------------------------------------------------------------
def test_cli_needs_openunlearning_error(monkeypatch, capsys):
    from atwu_plugin.cli import unlearn

    monkeypatch.delenv("OPEN_UNLEARNING_ROOT", raising=False)
    assert unlearn.main(["experiment=unlearn/tofu/default", "trainer=ATWU"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "OPEN_UNLEARNING_ROOT" in err and "experiment=unlearn/tofu/default" in err
    assert unlearn.needs_openunlearning(["trainer=GradDiff"]) == "trainer=GradDiff"
    assert unlearn.needs_openunlearning(["trainer=ATWU", "trainer.args.seed=3"]) is None


def test_cli_bad_root_is_one_line(monkeypatch, capsys, tmp_path):
    from atwu_plugin.cli import eval as eval_cli

    monkeypatch.setenv("OPEN_UNLEARNING_ROOT", str(tmp_path))
    assert eval_cli.main(["model.path=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not an OpenUnlearning checkout" in err


def test_run_openunlearning_command(tmp_path, monkeypatch):
    from atwu_plugin.hosts import openunlearning as ou

    (tmp_path / "src").mkdir()
    (tmp_path / "configs").mkdir()
    for name in ("train.py", "eval.py"):
        (tmp_path / "src" / name).write_text("import sys, os, json; print(json.dumps([os.getcwd()] + sys.argv[1:]))\n")
    done = ou.run_openunlearning("train", ["trainer=ATWU", "--config-name=unlearn.yaml", "--cfg", "job"], ou_root=str(tmp_path), cpu=True, capture_output=True)
    import json

    cwd, *argv = json.loads(done.stdout)
    assert Path(cwd) == tmp_path.resolve()
    assert argv[:3] == ["--config-name=unlearn.yaml", "--cfg", "job"]  # Hydra flags before any override
    assert argv[-1] == "trainer=ATWU" and "++trainer.args.optim=adamw_torch" in argv
    monkeypatch.setenv("OPEN_UNLEARNING_ROOT", str(tmp_path))
    done = ou.run_openunlearning("eval", ["a=b"], capture_output=True)
    assert json.loads(done.stdout)[1:] == ["a=b"]
    with pytest.raises(ValueError):
        ou.openunlearning_command("finetune")


# ---- export -----------------------------------------------------------------------------
def _record(i):
    return {"question": f"q{i}?", "answer": f"a{i}.", "paraphrased_answer": f"p{i}.", "perturbed_answer": [f"x{i}.", f"y{i}."]}


def test_export_layout_loads_offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    from atwu_plugin.data.export import export_splits, read_split_dir

    splits = {
        "forget10": [_record(i) for i in range(4)],
        "retain90": [_record(i) for i in range(9)],
        "holdout10": [_record(i) for i in range(4)],
        "world_facts": [_record(i) for i in range(3)],
        "world_text": ["some text", "more text"],
    }
    out = export_splits(splits, tmp_path / "out", meta={"seed": 0})
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    needed = ["forget10", "forget10_perturbed", "retain90", "retain_perturbed", "holdout10", "world_facts_perturbed", "real_authors_perturbed"]
    for name in needed:
        ds = datasets.load_dataset(str(out), name=name, split="train", cache_dir=str(tmp_path / "cache"))
        assert len(ds) > 0 and "question" in ds.column_names, name
    assert len(datasets.load_dataset(str(out), name="retain_perturbed", split="train", cache_dir=str(tmp_path / "cache"))) == 4
    # re-export over our own output is fine; over a foreign directory is refused
    export_splits(splits, out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        export_splits(splits, foreign)
    assert set(read_split_dir(out)) >= {"forget10", "retain_perturbed", "world_text"}


def test_export_cli_from_dir(tmp_path, capsys):
    import json

    from atwu_plugin.cli.export import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "forget01.json").write_text("\n".join(json.dumps(_record(i)) for i in range(2)))
    (src / "forget01_perturbed.json").write_text(json.dumps([_record(i) for i in range(2)]))
    (src / "meta.json").write_text(json.dumps({"seed": 0}))
    assert main(["dir", "--src", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "paths.local_data=" in capsys.readouterr().out
    text = (tmp_path / "out" / "README.md").read_text()
    assert "config_name: forget01_perturbed" in text and "meta" not in text.split("---")[1]
    assert main(["dir", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2


def test_export_dir_hint_names_the_embedded_experiment_only_for_embedded_data(tmp_path, capsys):
    """TOFU's own files go with OU's TOFU experiments; the embedded experiment (tiny models
    that read the embedded benchmark's text) is suggested only for a write_benchmark dir."""
    import json

    from atwu_plugin.cli.export import main

    for name, meta in (("tofu", None), ("embedded", {"generator_version": 1, "seed": 0})):
        src = tmp_path / name
        src.mkdir()
        (src / "forget01.json").write_text(json.dumps([_record(i) for i in range(2)]))
        if meta:
            (src / "meta.json").write_text(json.dumps(meta))
        assert main(["dir", "--src", str(src), "--out", str(tmp_path / f"out_{name}")]) == 0
        out = capsys.readouterr().out
        assert "experiment=unlearn/tofu/default" in out
        assert ("experiment=unlearn/atwu_embedded/default" in out) == (name == "embedded"), out
