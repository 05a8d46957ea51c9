"""Generator training: every schedule overfits a few grids; checkpoints reload to identical logits."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from generator_helpers import FINGERPRINT, make_token_cache, tiny_config
from navid import __version__
from navid.data.token_cache import TokenCache, TokenCacheDataModule
from navid.generation.checkpoint import load_generator
from navid.generation.lightning_module import GeneratorModule, token_accuracy, train_generator


def _all(cache: TokenCache) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, labels = zip(*(cache[i] for i in range(len(cache))))
    return torch.stack(tokens), torch.stack(labels)


@pytest.mark.parametrize("schedule", ["nar", "par4", "raster"])
def test_tiny_model_overfits_a_few_grids(tmp_path, schedule):
    # One clip per class, so every token (the first one included) is determined by the inputs.
    cache = make_token_cache(tmp_path / "cache", num_clips=4, num_classes=4)
    cfg = tiny_config(cache, tmp_path / "run", schedule, steps=100, **{"optim.lr": 1e-2})
    model, sched, _ = load_generator(train_generator(cfg), ema=False)
    tokens, labels = _all(TokenCache(cache))
    with torch.no_grad():
        logits = model.target_logits(tokens, labels, sched)  # (4, N, V)
    assert F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).item() < 0.05
    assert token_accuracy(logits, tokens.flatten(1), 1).item() == 1.0


def test_checkpoint_reloads_to_identical_logits(tmp_path):
    cache = make_token_cache(tmp_path / "cache", grid=(2, 4, 6))
    cfg = tiny_config(cache, tmp_path / "run", "par4", steps=6, **{"optim.ema_decay": 0.5})
    module = GeneratorModule(cfg, TokenCache(cache).meta)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=TokenCacheDataModule(cache, batch_size=4, val_fraction=0.0))
    path = tmp_path / "saved.ckpt"
    trainer.save_checkpoint(path)

    raw = torch.load(path, map_location="cpu", weights_only=True)
    meta = raw["navid"]
    assert meta["schedule"] == "par4" and meta["grid"] == [2, 4, 6]
    assert meta["class_names"] == ["class0", "class1"] and meta["tokenizer_fingerprint"] == FINGERPRINT
    assert meta["navid_version"] == __version__ and meta["config"]["model"]["schedule"] == "par4"

    tokens, labels = _all(TokenCache(cache))
    for ema, reference in ((False, module.model), (True, module.ema)):
        loaded, sched, _ = load_generator(path, ema=ema)
        with torch.no_grad():
            assert torch.equal(loaded.target_logits(tokens, labels, sched),
                               reference.eval().target_logits(tokens, labels, sched))
    # EMA and raw weights differ after training, so the two loads really are different weights.
    assert any(not torch.equal(a, b) for a, b in zip(module.model.parameters(), module.ema.parameters()))
