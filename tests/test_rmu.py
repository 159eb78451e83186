"""RMU (atwu_plugin/losses/rmu.py, atwu_plugin/trainers/rmu.py): the two terms on tensors, and the
trainer on the micro model (2 layers, so layer 1 and update_layers 2 cover every MLP)."""

import copy

import pytest
import torch

from atwu_plugin.hosts.lite_trainer import build_trainer, load_trainer_config
from atwu_plugin.losses.rmu import masked_mse, random_control_vector, rmu_forget_loss, rmu_retain_loss
from atwu_plugin.losses.tokens import answer_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_masked_mse_counts_only_masked_tokens_per_element():
    h = torch.tensor([[[1.0, 3.0], [100.0, 100.0]], [[0.0, 0.0], [2.0, 2.0]]])
    mask = torch.tensor([[True, False], [True, True]])
    # token means of squared errors vs 0: 5, (skipped), 0, 4 -> (5 + 0 + 4) / 3
    assert masked_mse(h, torch.zeros(2), mask).item() == pytest.approx(3.0)
    assert masked_mse(h, torch.zeros(2), torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0
    u = random_control_vector(16, seed=3)
    assert u.norm().item() == pytest.approx(1.0) and (u >= 0).all()
    assert torch.equal(u, random_control_vector(16, seed=3)) and not torch.equal(u, random_control_vector(16, seed=4))
    # the forget term is zero exactly at c u; the retain term at the frozen activations, with no gradient to them
    c_u = 5.0 * u
    assert rmu_forget_loss(c_u.expand(2, 3, 16), c_u, torch.ones(2, 3, dtype=torch.bool)).item() == 0.0
    h0 = torch.randn(2, 3, 16, requires_grad=True)
    h = torch.randn(2, 3, 16, requires_grad=True)
    rmu_retain_loss(h, h0, torch.ones(2, 3, dtype=torch.bool)).backward()
    assert h.grad is not None and h0.grad is None


def _rmu(micro, tmp_path, **method_args):
    overrides = {"args.num_train_epochs": 1, "args.per_device_train_batch_size": 4, "args.learning_rate": 1e-2,
                 **{f"method_args.{k}": v for k, v in method_args.items()}}
    cfg = load_trainer_config("PluginRMU", overrides)
    return build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], micro["forget"], micro["retain"],
                         str(tmp_path), 0)


def test_rmu_trains_only_the_steered_mlps_and_moves_forget_activations_to_the_control(micro, tmp_path):
    trainer = _rmu(micro, tmp_path, layer=1, update_layers=1, steering_scale=2.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.1.mlp.") for n in trainable)
    batch = trainer.data_collator([micro["forget"][i] for i in range(8)])
    mask = answer_mask(batch["labels"])

    def forget_term():
        with torch.no_grad():
            h = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              output_hidden_states=True).hidden_states[2]
        return rmu_forget_loss(h, trainer.steering_coeff * trainer.control, mask).item()

    trainer.train()
    # default c: steering_scale x the mean norm of the initial layer-1 activations over forget tokens
    with torch.no_grad():
        h0 = trainer.frozen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True).hidden_states[2]
    start = rmu_forget_loss(h0, trainer.steering_coeff * trainer.control, mask).item()
    assert forget_term() < 0.5 * start
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert 1.0 < trainer.steering_coeff / 2.0  # activations of a trained model have norm > 1
    assert not any(p.requires_grad for p in trainer.frozen.parameters())


def test_rmu_rejects_bad_options(micro, tmp_path):
    with pytest.raises(ValueError, match=r"method_args.layer=5; expected a decoder layer index in \[0, 1\]"):
        _rmu(micro, tmp_path, layer=5)
    with pytest.raises(ValueError, match="method_args.update_layers=3; expected 1..2"):
        _rmu(micro, tmp_path, layer=1, update_layers=3)
    with pytest.raises(ValueError, match="steering_coeff=-1.0; expected > 0"):
        _rmu(micro, tmp_path, layer=1, update_layers=1, steering_coeff=-1.0)
