"""Reward model: a sequence classifier with one output, trained on preference pairs with TRL's RewardTrainer.

The loss is Bradley-Terry, -log sigmoid(r(x, y_chosen) - r(x, y_rejected)) (Ouyang et al. 2022, InstructGPT),
optionally minus the pair's margin inside the sigmoid (Touvron et al. 2023, Llama 2), and with per-pair weights
where a prompt's ranking gives several comparisons (train.reward_model.pairs=all: 1/C(K,2) each, InstructGPT). The
model reads the whole chat-formatted conversation (system + user prompt + assistant response), tokenised exactly as
TRL tokenises conversational pairs, and its score head gives one score per token; the reward is the score at the
last non-pad token (readout=last, TRL's classifiers) or the mean over the response's tokens (readout=mean). Our
`compute_loss` replaces TRL's for both; `RewardModel.score` formats and reads inputs the same way.

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
from selfplay.train.setup import history_mean, optim_args, report_to

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


def comparison_weights(pairs: Sequence[Pair], weights: Sequence[float] | None) -> list[float]:
    """Per-pair loss weights scaled to mean 1 over `pairs` (so the loss keeps the unweighted one's scale and the
    learning rate means the same); None = every pair weighs 1."""
    if weights is None or not pairs:
        return [1.0] * len(pairs)
    if len(weights) != len(pairs) or not all(w > 0 and math.isfinite(w) for w in weights):
        raise ValueError(f"comparison_weights: {len(weights)} weights for {len(pairs)} pairs, each must be finite and > 0")
    scale = len(weights) / sum(weights)
    return [w * scale for w in weights]


def bradley_terry_loss(chosen, rejected, weight, margin=None, center_coef: float = 0.0):
    """mean_i w_i * -log sigmoid(r_c - r_r - margin_i), plus center_coef * mean((r_c + r_r)^2) as TRL's
    center_rewards_coefficient adds it. With every w = 1 and no margin, TRL RewardTrainer's loss."""
    import torch

    gap = chosen - rejected - (margin if margin is not None else 0.0)
    loss = (-torch.nn.functional.logsigmoid(gap) * weight).mean()
    return loss + center_coef * torch.mean((chosen + rejected) ** 2) if center_coef else loss


def score_head(model):
    """The classifier's per-token head: GenericForSequenceClassification's `score` (peft's wrapper of it when it
    is trained beside an adapter); the outermost module of that name, as named_modules lists parents first."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "score":
            return module
    raise RewardModelError(f"{type(model).__name__}: no score head; not a sequence classifier")


def readout_rewards(model, input_ids, attention_mask, response_mask, readout: str):
    """One reward per row: last = the classifier's own output (its score at the last non-pad token); mean = the
    score head's per-token outputs averaged over `response_mask` (1 on response tokens). transformers' sequence
    classifiers score every position and then pick the last one (modeling_layers.GenericForSequenceClassification),
    so the per-token scores are the head's output, read by a forward hook (docs/design.md, "TRL 1.16 and its formats")."""
    seen = []
    hook = score_head(model).register_forward_hook(lambda module, args, out: seen.append(out)) if readout == "mean" else None
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    finally:
        if hook is not None:
            hook.remove()
    if readout == "last":
        return logits[:, 0].float()
    tokens, mask = seen[-1][..., 0].float(), response_mask.to(seen[-1].device).float()
    return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def encode_conversation(tokenizer, prompt: str, response: str) -> tuple[list[int], int]:
    """(token ids, index of the first response token) of the chat-formatted conversation, tokenised as TRL's
    RewardTrainer tokenises a conversational pair. The response starts where the conversation stops agreeing with
    the prompt alone plus the generation prompt (the common prefix: a template may render those differently)."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    head = list(
        tokenizer.apply_chat_template(messages[:1], tokenize=True, return_dict=True, add_generation_prompt=True)["input_ids"]
    )
    start = 0
    while start < min(len(ids), len(head)) and ids[start] == head[start]:
        start += 1
    return ids, start


def reward_features(pairs: Sequence[Pair], tokenizer, margin: bool, weights: Sequence[float]) -> list[dict]:
    """The tokenised training rows: chosen_ids / rejected_ids (TRL's names, so its length filter applies and its
    tokenisation is skipped: docs/design.md, "TRL 1.16 and its formats"), where each response starts, the weight,
    and with `margin` the pair's judge margin."""
    rows = []
    for p, weight in zip(pairs, weights, strict=True):
        chosen, chosen_start = encode_conversation(tokenizer, p.prompt, p.chosen)
        rejected, rejected_start = encode_conversation(tokenizer, p.prompt, p.rejected)
        row = dict(chosen_ids=chosen, rejected_ids=rejected, chosen_start=chosen_start, rejected_start=rejected_start)
        row["weight"] = float(weight)
        if margin:
            row["margin"] = float(p.margin)
        rows.append(row)
    return rows


def collate_features(rows: list[dict], pad_id: int) -> dict:
    """A batch of reward_features rows: the chosen sequences then the rejected ones (as TRL's collator), right-padded,
    with the response mask (1 from each response's start to its end), the weights and any margins."""
    import torch

    seqs = [(r["chosen_ids"], r["chosen_start"]) for r in rows] + [(r["rejected_ids"], r["rejected_start"]) for r in rows]
    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    response = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (ids, start) in enumerate(seqs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        response[i, start : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "response_mask": response}
    batch["weight"] = torch.tensor([float(r["weight"]) for r in rows])
    if "margin" in rows[0]:
        batch["margin"] = torch.tensor([float(r["margin"]) for r in rows])
    return batch


def train_reward_model(
    pairs: Sequence[Pair], base: Path, out_dir: Path, cfg: TrainConfig, seed: int, weights: Sequence[float] | None = None
) -> RewardResult:
    """Trains a reward model on `pairs` starting from checkpoint `base`; saves it into `out_dir`. The settings are
    train.reward_model's, or its defaults for a run whose algorithm has none (`selfplay train rm` on a dpo run).
    `weights` (one per pair, e.g. 1/C(K,2) for the comparisons of a K-response ranking) weigh each pair's loss."""
    started = time.monotonic()
    settings = cfg.reward_model or RewardModelSection()
    out_dir = Path(out_dir)
    train_pairs, heldout = split_heldout(pairs, settings.heldout, seed)
    held = {p.prompt_id for p in heldout}  # split_heldout holds out whole prompts and keeps the order
    train_weights = comparison_weights(
        train_pairs, None if weights is None else [w for p, w in zip(pairs, weights, strict=True) if p.prompt_id not in held]
    )
    result = dict(
        pairs=len(pairs),
        heldout=len(heldout),
        base=str(base),
        lora=settings.lora,
        margin=settings.margin,
        max_length=cfg.max_length,
        readout=settings.readout,
        pair_mode=settings.pairs,
        weighted=weights is not None,
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

    class BradleyTerryTrainer(RewardTrainer):
        """TRL's RewardTrainer with our loss: the reward read out as train.reward_model.readout says, each pair's
        loss weighted; the metrics TRL logs (accuracy, margin, rewards) kept."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            rewards = readout_rewards(
                model, inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"], settings.readout
            )
            chosen, rejected = torch.chunk(rewards, chunks=2)
            loss = bradley_terry_loss(chosen, rejected, inputs["weight"], inputs.get("margin"), settings.center_coef)
            with torch.no_grad():
                gather = self.accelerator.gather_for_metrics
                self._metrics[mode]["mean_reward"].append(gather(rewards.detach()).mean().item())
                self._metrics[mode]["accuracy"].append(gather((chosen > rejected).float().mean()).mean().item())
                self._metrics[mode]["margin"].append(gather((chosen - rejected).mean()).mean().item())
            return (loss, rewards) if return_outputs else loss

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
            center_rewards_coefficient=settings.center_coef or None,  # read by our loss from settings; kept for the record
            remove_unused_columns=False,  # our collator reads the response starts and weights
            model_init_kwargs={"dtype": torch.float32, "use_safetensors": True},
            logging_steps=1,
            save_strategy="no",
            **optim_args(cfg),
            report_to=report_to(cfg, out_dir / "logs"),
            seed=seed,
            data_seed=seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        )
        dataset = Dataset.from_list(reward_features(train_pairs, tokenizer, settings.margin, train_weights))
        # A path, not a model: TRL loads it as a classifier with num_labels=1 after seeding (the new head is random).
        trainer = BradleyTerryTrainer(
            model=str(base),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            data_collator=lambda rows: collate_features(rows, tokenizer.pad_token_id),
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
        rm = RewardModel(model, tokenizer, cfg.max_length, readout=settings.readout)
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

    def __init__(self, model, tokenizer, max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 8, readout: str = "last"):
        self.model, self.tokenizer, self.max_length, self.batch_size = model, tokenizer, max_length, batch_size
        self.readout = readout  # last | mean (train.reward_model.readout), as the model was trained
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # The classifier reads the last token that is not padding, so the model must know the pad id.
        model.config.pad_token_id = tokenizer.pad_token_id

    @classmethod
    def load(cls, path: Path, batch_size: int = 8, readout: str = "last") -> RewardModel:
        """The model in `path`, read out as it was trained (its reward_model.json); `readout` is for a foreign
        checkpoint without one."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = check_reward_model(Path(path))
        max_length = DEFAULT_MAX_LENGTH
        if (path / RESULT_FILE).exists():
            trained = RewardResult.model_validate_json((path / RESULT_FILE).read_text())
            max_length, readout = trained.max_length, trained.readout
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype, use_safetensors=True).to(device).eval()
        return cls(model, AutoTokenizer.from_pretrained(path), max_length, batch_size, readout)

    def encode(self, prompt: str, response: str) -> tuple[list[int], int]:
        """(token ids, first response token) as training builds them (encode_conversation), cut to the last
        max_length (the classifier reads the final token, so keep the end; the response start moves with the cut)."""
        ids, start = encode_conversation(self.tokenizer, prompt, response)
        cut = max(0, len(ids) - self.max_length)
        return ids[cut:], max(0, start - cut)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths batch with less padding
        scores: list[float] = [0.0] * len(encoded)
        device, pad = self.model.device, self.tokenizer.pad_token_id
        for first in range(0, len(order), self.batch_size):
            batch = order[first : first + self.batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            response = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # right padding, as TRL's collator
                tokens, start = encoded[i]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
                response[row, start : len(tokens)] = 1
            with torch.inference_mode():
                rewards = readout_rewards(self.model, ids.to(device), mask.to(device), response, self.readout)
            for row, i in enumerate(batch):
                scores[i] = rewards[row].item()
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
