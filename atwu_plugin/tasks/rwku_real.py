"""``rwku_real``: RWKU as it is meant, single-target unlearning of knowledge a real pretrained
model already has (no fine-tune first), on the lite host.

* target model: the real model from the zoo (``model``, default ``smollm2-135m``:
  SmolLM2-135M-Instruct, GGUF Q4_1 weights dequantised to float32), prompted through its chat
  template; unlearning trains its top ``top_layers`` decoder layers (the 2-core budget);
* forget corpus: ``n_forget`` of the target's Wikipedia passages (RWKU's
  ``train_original_passage``, the corpus of its GA-passage baseline), evenly spaced over the
  article, each cut to ``max_tokens`` tokens; RWKU's main setting trains on model-generated
  texts, which the vendored data has for target 1 only (docs/rwku.md). ``forget_format``:
  ``text`` (plain LM text, as RWKU's passage baseline) or ``chat`` (each passage as the
  assistant's answer to "Please tell me about <target>.", in the model's chat template, as
  RWKU's generated texts answer such a request; the default); the retain corpus takes the same
  format. Measured on the development target (195 Brett Favre, rwku_real_calibration.yaml): in
  the text format, NPO and GradDiff drove the passages' own loss up (MIA AUC 0.75 -> 0.04) but
  not the probes' answer probability (0.144 -> 0.137 for NPO after 18 steps at lr 2e-4; GradDiff
  only lowered it once the neighbours collapsed), so the forgetting did not reach the knowledge
  as the probes ask for it; in the chat format both brought it to 0.5x within 6 steps;
* retain corpus: ``n_retain`` passages of ``retain_targets`` (other RWKU targets, evenly spaced),
  the same kind of text about unrelated people: RWKU has no retain set and its baselines with a
  retain loss draw one from other targets' texts;
* evaluation (``evals.rwku_real_eval``): forget FB/QA/AA and neighbour FB/QA (RWKU's ROUGE-L
  recall at the end, answer probability at every trajectory point), MIA forget_mia vs
  retain_mia;
* no retain model (no model lacks exactly this knowledge) and no auxiliary model: a weighter
  that needs one (``Reference``) stops with the trainer's error unless its config names one.

The target is picked from docs/results/rwku_known_targets.md (targets the model knows, whose
neighbours it knows too); the data root comes from ``data_root`` or ``RWKU_DATA_ROOT``.
"""

from typing import List, Optional, Sequence, Tuple

from torch.utils.data import Dataset

from atwu_plugin.data.lm_items import lm_items
from atwu_plugin.data.rwku import RWKUTarget, open_rwku
from atwu_plugin.data.tofu_splits import evenly_spaced
from atwu_plugin.tasks import BENCHMARKS
from atwu_plugin.tasks.rwku_tiny import rwku_data_root
from atwu_plugin.tasks.tofu_real import RealTofuZoo
from atwu_plugin.tasks.zoo_backed import ZooBackedBenchmark
from atwu_plugin.zoo.real import REAL_MODELS, real_model
from atwu_plugin.zoo.build import qa_items
from atwu_plugin.zoo.trainable import train_only_top_layers

FORMATS = ("text", "chat")
#: the user turn of a ``chat``-format passage (RWKU's model-generated forget texts answer a
#: request to describe the target; the passages stand in for them)
CHAT_PROMPT = "Please tell me about {name}."
#: room for the chat template's system prompt and user turn on top of ``max_tokens``
CHAT_PROMPT_TOKENS = 64


class PassageItems(Dataset):
    """Training items of ``(name, passage)`` pairs: ``text`` = plain LM items (loss on every
    token), ``chat`` = the passage as the assistant's answer to :data:`CHAT_PROMPT` in the
    model's template (loss on the passage only); passages cut to ``max_tokens`` tokens."""

    def __init__(self, pairs: Sequence[Tuple[str, str]], tokenizer, template_args: dict, max_tokens: int,
                 fmt: str, name: str):
        if not pairs:
            raise ValueError(f"benchmark rwku_real: the {name} corpus is empty")
        if fmt == "text":
            items = lm_items(tokenizer, [text for _, text in pairs], max_tokens + 1)
        else:
            records = [{"question": CHAT_PROMPT.format(name=who), "answer": text} for who, text in pairs]
            items = qa_items(tokenizer, records, max_tokens + CHAT_PROMPT_TOKENS, template_args)
        self.name = name
        self.items = [{**item, "index": i} for i, item in enumerate(items)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

# Shared by every method; set on the development target 195 (rwku_real_calibration.yaml), not on
# the reported ones: 48 passages at batch 8 are 6 steps per epoch. There, in the chat format, lr 2e-4
# brought the forget answer probability to 0.5x its start by step ~4 (GradDiff) and ~6 (NPO); 1.5e-4
# for 12 steps puts those crossings inside the run with room for the slower token-weighted methods.
# In the text format no lr moved it (see the module docstring).
RWKU_REAL_TRAINER_ARGS = {"learning_rate": 1.5e-4, "num_train_epochs": 2, "per_device_train_batch_size": 8}


@BENCHMARKS.register("rwku_real")
class RWKURealBenchmark(ZooBackedBenchmark):
    name = "rwku_real"

    def __init__(self, target, data_root: Optional[str] = None, model: str = "smollm2-135m",
                 retain_targets: str = "101-105", n_forget: int = 48, n_retain: int = 48, max_tokens: int = 128,
                 n_probes: int = 20, n_mia: int = 20, top_layers: Optional[int] = 8, eval_batch_size: int = 8,
                 max_new_tokens: int = 16, forget_format: str = "chat", cache_dir: Optional[str] = None,
                 trainer_args: Optional[dict] = None):
        if model not in REAL_MODELS:
            raise ValueError(f"benchmark rwku_real: model={model!r}; expected one of {sorted(REAL_MODELS)}")
        data_root = rwku_data_root(data_root, "rwku_real")
        for name, value in (("n_forget", n_forget), ("n_retain", n_retain), ("max_tokens", max_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"benchmark rwku_real: {name}={value!r}; expected a positive integer")
        if forget_format not in FORMATS:
            raise ValueError(f"benchmark rwku_real: forget_format={forget_format!r}; expected one of {list(FORMATS)}")
        if top_layers is not None and (not isinstance(top_layers, int) or top_layers < 1):
            raise ValueError(f"benchmark rwku_real: top_layers={top_layers!r}; expected a positive integer "
                             "(or null: all weights)")
        self.data = open_rwku(data_root)
        self.target: RWKUTarget = self.data.target(target)
        self.retain_targets = self.data.select(retain_targets)
        if any(t.index == self.target.index for t in self.retain_targets):
            raise ValueError(f"benchmark rwku_real: retain_targets={retain_targets!r} includes the forget target "
                             f"{self.target.key}")
        for t in [self.target, *self.retain_targets]:
            if not self.data.has(t, "passage"):
                raise ValueError(f"benchmark rwku_real: target {t.key} has no passage.json in {self.data.source}")
        self.real_name, self.top_layers = model, top_layers
        self.n_forget, self.n_retain, self.max_tokens = n_forget, n_retain, max_tokens
        self.n_probes, self.n_mia, self.forget_format = n_probes, n_mia, forget_format
        self.eval_batch_size, self.max_new_tokens, self.cache_dir = eval_batch_size, max_new_tokens, cache_dir
        self.trainer_args = {**RWKU_REAL_TRAINER_ARGS, **(trainer_args or {})}
        self.zoo = None

    def prepare(self, log=print):
        if self.zoo is None:
            entry = real_model(self.real_name, self.cache_dir, log=log)
            self.zoo = RealTofuZoo(root=entry.path, tokenizer=entry.path, base=entry.path, target=entry.path,
                                   retain={}, template_args=entry.template_args, manifest=entry.manifest)
        return self

    def configure_model(self, model) -> None:
        if self.top_layers is not None:
            train_only_top_layers(model, self.top_layers)

    @property
    def retain_model_path(self) -> Optional[str]:
        return None  # no model was trained without exactly this target's knowledge

    @property
    def aux_model_path(self) -> Optional[str]:
        # None: the pretrained model already knows the target and no model lacks exactly its
        # knowledge; a weighter that needs one (TW_Reference) then stops with the trainer's error
        return None

    def forget_passages(self) -> List[Tuple[str, str]]:
        """``(target name, passage)`` pairs of the forget corpus."""
        return [(self.target.name, p) for p in evenly_spaced(self.data.passages(self.target), self.n_forget)]

    def retain_passages(self) -> List[Tuple[str, str]]:
        pool = [(t.name, p) for t in self.retain_targets for p in self.data.passages(t)]
        return evenly_spaced(pool, self.n_retain)

    def train_datasets(self, tokenizer):
        args = (tokenizer, self.template_args, self.max_tokens, self.forget_format)
        return (PassageItems(self.forget_passages(), *args, "forget"),
                PassageItems(self.retain_passages(), *args, "retain"))

    def evaluator(self, tokenizer, progress=None):
        from atwu_plugin.evals.rwku_real_eval import RWKURealEvaluator

        return RWKURealEvaluator(tokenizer, self.template_args, self.data, self.target, n_probes=self.n_probes,
                                 n_mia=self.n_mia, mia_max_length=self.max_tokens, batch_size=self.eval_batch_size,
                                 max_new_tokens=self.max_new_tokens, show_progress=bool(progress))

    @property
    def model_name(self) -> str:
        m = self.prepare().zoo.manifest
        trained = f", top {self.top_layers} layers trained" if self.top_layers else ""
        return (f"{self.real_name} ({m['quantisation']}; sha256 {m['gguf_sha256'][:12]}), pretrained, "
                f"RWKU target {self.target.key}{trained}")
