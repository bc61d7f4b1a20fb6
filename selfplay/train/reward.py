"""Reward model: a sequence classifier with one output, trained on preference pairs with TRL's RewardTrainer.

The loss is Bradley-Terry, -log sigmoid(r(x, y_chosen) - r(x, y_rejected)) (Ouyang et al. 2022, InstructGPT),
optionally minus the pair's margin inside the sigmoid (Touvron et al. 2023, Llama 2). The model reads the whole
chat-formatted conversation (system + user prompt + assistant response) and scores the last non-pad token,
exactly as TRL tokenises conversational pairs; `RewardModel.score` formats inputs the same way.

A slice of the pairs, grouped by prompt so a prompt never sits on both sides, is held out to measure pair
accuracy (0.5 = chance). The saved directory is an ordinary Hugging Face checkpoint (safetensors only; a LoRA
adapter is merged first) plus reward_model.json, written last.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from selfplay.config import RewardModelSection, TrainConfig
from selfplay.errors import SelfplayError
from selfplay.models import bf16_is_fast, weights_problem
from selfplay.records import Pair, RewardResult, derive_seed, is_main_process, write_json
from selfplay.train.setup import history_mean, report_to

RESULT_FILE = "reward_model.json"  # written last: a directory without it is a half-saved (or foreign) model
DEFAULT_MAX_LENGTH = 2048  # scoring limit for foreign checkpoints without reward_model.json, tokens


class RewardModelError(SelfplayError, ValueError):
    """A reward-model directory that cannot be used, or a reward that cannot be trusted; one line saying why."""


def split_heldout(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, heldout): whole prompts are held out, in a seeded order, until `fraction` of the pairs is reached.
    Grouping by prompt keeps two pairs of one prompt from sitting on both sides (that would flatter accuracy).
    At least one pair is held out when fraction > 0 and at least one prompt is left to train on."""
    if fraction <= 0 or len(pairs) < 2:
        return list(pairs), []
    prompt_ids = sorted({p.prompt_id for p in pairs})
    random.Random(derive_seed(seed, "rm-heldout")).shuffle(prompt_ids)
    target = max(1, round(fraction * len(pairs)))
    held: set[str] = set()
    count = 0
    for pid in prompt_ids[:-1]:  # always leave one prompt to train on
        if count >= target:
            break
        held.add(pid)
        count += sum(1 for p in pairs if p.prompt_id == pid)
    return [p for p in pairs if p.prompt_id not in held], [p for p in pairs if p.prompt_id in held]


def reward_rows(pairs: Sequence[Pair], margin: bool) -> list[dict]:
    """TRL's conversational preference rows; with `margin`, the pair's judge margin as TRL's `margin` column."""
    rows = []
    for p in pairs:
        row = p.to_trl()
        if margin:
            row["margin"] = float(p.margin)
        rows.append(row)
    return rows


def train_reward_model(pairs: Sequence[Pair], base: Path, out_dir: Path, cfg: TrainConfig, seed: int) -> RewardResult:
    """Trains a reward model on `pairs` starting from checkpoint `base`; saves it into `out_dir`. The settings are
    train.reward_model's, or its defaults for a run whose algorithm has none (`selfplay train rm` on a dpo run)."""
    started = time.monotonic()
    settings = cfg.reward_model or RewardModelSection()
    out_dir = Path(out_dir)
    train_pairs, heldout = split_heldout(pairs, settings.heldout, seed)
    result = dict(
        pairs=len(pairs),
        heldout=len(heldout),
        base=str(base),
        lora=settings.lora,
        margin=settings.margin,
        max_length=cfg.max_length,
    )
    if not train_pairs:
        return RewardResult(
            **result,
            train_pairs=0,
            too_long=0,
            heldout_accuracy=None,
            heldout_margin=None,
            train_accuracy=None,
            loss_first=None,
            loss_last=None,
            steps=0,
            seconds=0.0,
            model_dir=None,
            skipped="no pairs to train the reward model on",
        )

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from selfplay.train.guard import NonFiniteGradGuard, StepBar, check_finite

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast())
    peft_config = None
    if settings.lora:
        from peft import LoraConfig

        # task_type SEQ_CLS makes peft train (and save) the new score head in full beside the adapter.
        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules="all-linear",
            task_type="SEQ_CLS",
        )
    with tempfile.TemporaryDirectory(prefix="selfplay-rm-") as scratch:
        args = RewardConfig(
            output_dir=scratch,
            learning_rate=settings.learning_rate,
            num_train_epochs=settings.epochs,
            per_device_train_batch_size=settings.batch_size,
            max_length=cfg.max_length,
            bf16=use_bf16,
            center_rewards_coefficient=settings.center_coef or None,
            model_init_kwargs={"dtype": torch.float32, "use_safetensors": True},
            logging_steps=1,
            save_strategy="no",
            report_to=report_to(cfg, out_dir / "logs"),
            seed=seed,
            data_seed=seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        )
        dataset = Dataset.from_list(reward_rows(train_pairs, settings.margin))
        # A path, not a model: TRL loads it as a classifier with num_labels=1 after seeding (the new head is random).
        trainer = RewardTrainer(
            model=str(base), args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
        trainer.remove_callback(PrinterCallback)  # our result reports the losses; per-step dicts would drown the output
        guard = NonFiniteGradGuard()
        trainer.add_callback(guard)
        used = len(trainer.train_dataset)
        result.update(train_pairs=used, too_long=len(train_pairs) - used)
        if used == 0:
            return RewardResult(
                **result,
                heldout_accuracy=None,
                heldout_margin=None,
                train_accuracy=None,
                loss_first=None,
                loss_last=None,
                steps=0,
                seconds=round(time.monotonic() - started, 1),
                model_dir=None,
                skipped=f"every training pair is longer than max_length={cfg.max_length} tokens",
            )
        trainer.add_callback(StepBar("reward model"))
        trainer.train()
        history = trainer.state.log_history
        model = trainer.model.merge_and_unload() if settings.lora else trainer.model
    model.eval()
    check_finite(model)  # a diverged reward model would hand NaN rewards to every policy trained on it

    heldout_accuracy = heldout_margin = None
    if heldout:
        rm = RewardModel(model, tokenizer, cfg.max_length)
        chosen = rm.score([p.prompt for p in heldout], [p.chosen for p in heldout])
        rejected = rm.score([p.prompt for p in heldout], [p.rejected for p in heldout])
        heldout_accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(heldout)
        heldout_margin = sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(heldout)

    if is_main_process():  # a distributed launch: rank 0 saves, the others wait for the files before using them
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULT_FILE).unlink(missing_ok=True)  # a re-save is incomplete until the result is written again
        model.to(torch.bfloat16 if use_bf16 else torch.float32).save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    trainer.accelerator.wait_for_everyone()
    rm_result = RewardResult(
        **result,
        heldout_accuracy=heldout_accuracy,
        heldout_margin=heldout_margin,
        train_accuracy=history_mean(history, "accuracy", last=True),
        loss_first=history_mean(history, "loss", last=False),
        loss_last=history_mean(history, "loss", last=True),
        steps=trainer.state.global_step,
        nan_steps=guard.skipped_steps,
        seconds=round(time.monotonic() - started, 1),
        model_dir=str(out_dir),
    )
    write_json(out_dir / RESULT_FILE, rm_result.model_dump())
    return rm_result


def check_reward_model(path: Path) -> Path:
    """`path` if it is a reward model RewardModel.load can use: a Hugging Face sequence classifier with one output,
    safetensors weights (and no pickle ones), a readable reward_model.json if any. Reads only those small files, no
    weights and no transformers (preflight checks train.reward_model's paths with it in milliseconds)."""
    if not path.is_dir():
        raise RewardModelError(f"{path}: not a directory; expected a reward model saved by `selfplay train rm`")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RewardModelError(f"{path}: no config.json; not a Hugging Face checkpoint directory") from None
    except (OSError, ValueError) as err:
        raise RewardModelError(f"{path}/config.json: unreadable ({err.__class__.__name__})") from None
    config = config if isinstance(config, dict) else {}
    archs = [str(a) for a in config.get("architectures") or []]
    # Counted as transformers' configs count them: the id2label map, else num_labels, else its default of 2.
    labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 2)
    if not any(a.endswith("ForSequenceClassification") for a in archs) or labels != 1:
        raise RewardModelError(
            f"{path}: a {'/'.join(archs) or 'model'} with {labels} outputs, not a reward "
            "model (a sequence classifier with 1 output)"
        )
    problem = weights_problem(path)
    if problem:
        raise RewardModelError(f"{path}: {problem}")
    if (path / RESULT_FILE).exists():
        try:
            RewardResult.model_validate_json((path / RESULT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RewardModelError(f"{path / RESULT_FILE}: unreadable ({err.__class__.__name__}); retrain or remove it") from None
    return path


class RewardModel:
    """A loaded reward model: `score(prompts, responses)` -> one float per response (higher = preferred).

    Its signature is the `reward_fn` that PPO, RLOO and GRPO take."""

    def __init__(self, model, tokenizer, max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 8):
        self.model, self.tokenizer, self.max_length, self.batch_size = model, tokenizer, max_length, batch_size
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # The classifier reads the last token that is not padding, so the model must know the pad id.
        model.config.pad_token_id = tokenizer.pad_token_id

    @classmethod
    def load(cls, path: Path, batch_size: int = 8) -> RewardModel:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = check_reward_model(Path(path))
        max_length = DEFAULT_MAX_LENGTH
        if (path / RESULT_FILE).exists():
            max_length = RewardResult.model_validate_json((path / RESULT_FILE).read_text()).max_length
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype, use_safetensors=True).to(device).eval()
        return cls(model, AutoTokenizer.from_pretrained(path), max_length, batch_size)

    def encode(self, prompt: str, response: str) -> list[int]:
        """Token ids as TRL's RewardTrainer builds them for a conversational pair, cut to the last max_length
        (the classifier reads the final token, so keep the end)."""
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        return list(ids)[-self.max_length :]

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths batch with less padding
        scores: list[float] = [0.0] * len(encoded)
        device, pad = self.model.device, self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # right padding, as TRL's collator
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float()
            for row, i in enumerate(batch):
                scores[i] = logits[row].item()
        return scores

    __call__ = score


class SafetyGatedReward:
    """Two reward models combined as in Llama 2 (Touvron et al. 2023, §3.2.2): the safety model's score where
    it finds a response unsafe (sigmoid(score) < threshold), else the helpfulness model's. Counts how often
    the safety score was used."""

    def __init__(self, helpful, safety, threshold: float):
        self.helpful, self.safety, self.threshold = helpful, safety, threshold
        self.scored = self.gated = 0

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        safe, helpful = self.safety(prompts, responses), self.helpful(prompts, responses)
        out = []
        for s, h in zip(safe, helpful, strict=True):
            unsafe = 1.0 / (1.0 + math.exp(-s)) < self.threshold
            self.gated += unsafe
            out.append(s if unsafe else h)
        self.scored += len(out)
        return out

    @property
    def gated_fraction(self) -> float | None:
        return self.gated / self.scored if self.scored else None
