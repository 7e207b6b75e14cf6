"""Run rmaudit probes inside a training loop: a transformers ``TrainerCallback``.

Pathologies show up during training, not after: at each evaluation of a TRL
``RewardTrainer`` (or any ``transformers.Trainer`` training a ``*ForSequenceClassification``
with ``num_labels=1``) the callback scores the held-out pairs with the live model, runs
the chosen probes, and logs their metrics and statuses::

    from rmaudit.integrations import RmauditCallback
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                            processing_class=tokenizer,
                            callbacks=[RmauditCallback(eval_pairs="held_out.jsonl",
                                                       probes=["length_bias", "accuracy"])])

Each result lands in ``trainer.state.log_history`` (``rmaudit/<probe>/<metric>`` plus
``rmaudit/<probe>/status``: 0 pass, 1 warn, 2 fail), in the metrics dict that
``trainer.evaluate()`` returns, and in ``callback.results`` (one AuditResult per
evaluation). The model is scored through its own forward (``pooling="native"``), which is
how TRL's ``RewardTrainer`` trains it; the model is put back in training mode afterwards.
``chat_template="plain.jinja"`` renders the held-out pairs in the format the run trains on
where that is not the tokenizer's template (TRL on plain-text rows: prompt + response + eos);
the trainer's tokenizer is left as it is.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from rmaudit.data.pairs import PreferencePair
from rmaudit.findings import Status
from rmaudit.options import AuditOptions, Pooling, choice
from rmaudit.results import AuditResult

STATUS_CODES = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 2, Status.SKIP: -1}


class RmauditCallback(TrainerCallback):
    """Run rmaudit probes on the live model at every evaluation (see the module docstring)."""

    def __init__(self, eval_pairs: str | Path | Sequence[PreferencePair],
                 probes: str | Sequence[str] = ("length_bias", "accuracy", "canonical_pairs"),
                 train_pairs: str | Path | Sequence[PreferencePair] | None = None, max_pairs: int = 200,
                 batch_size: int = 16, pooling: str = "native", **options: Any):
        from rmaudit.inputs import read_template_file
        from rmaudit.runner import prepare_probes

        self.eval_pairs = _pairs(eval_pairs)
        self.train_pairs = _pairs(train_pairs) if train_pairs is not None else None
        self.options = AuditOptions(probes=probes, max_pairs=max_pairs, batch_size=batch_size,
                                    pooling=choice(Pooling, pooling, "pooling"), **options).validated()
        self.probes = prepare_probes(self.options)  # a typo fails now, not at the first evaluation
        self.chat_template = read_template_file(self.options.chat_template)
        self.results: list[AuditResult] = []

    def on_evaluate(self, args, state, control, model=None, processing_class=None, metrics=None, **kwargs):
        tokenizer = processing_class if processing_class is not None else kwargs.get("tokenizer")
        if model is None or tokenizer is None or not state.is_world_process_zero:
            return control
        result = self.audit(model, tokenizer)
        logged = {"step": state.global_step, **flat_metrics(result)}
        state.log_history.append(logged)
        if metrics is not None:
            metrics.update({k: v for k, v in logged.items() if k != "step"})
        return control

    def audit(self, model: Any, tokenizer: Any) -> AuditResult:
        """Run the probes on ``model`` as it is now; the training mode is restored after."""
        from rmaudit.inputs import canonical_pairs, sample_pairs
        from rmaudit.probes.context import AuditContext
        from rmaudit.runner import run_probes

        if self.chat_template is not None:  # a copy: the trainer's own tokenizer keeps its template
            tokenizer = copy.copy(tokenizer)
            tokenizer.chat_template = self.chat_template
        was_training = model.training
        model.eval()
        try:
            ctx = AuditContext(
                checkpoint=Path(getattr(model.config, "_name_or_path", "") or "in-training"), model=model,
                tokenizer=tokenizer, eval_pairs=sample_pairs(self.eval_pairs, self.options.max_pairs, self.options.seed),
                all_eval_pairs=self.eval_pairs, train_pairs=self.train_pairs,
                canonical_pairs=canonical_pairs(self.options.pairs), batch_size=self.options.batch_size,
                pooling=self.options.pooling.value, max_length=self.options.max_length,
            )
            result = run_probes(ctx, self.options, self.probes)
        finally:
            model.train(was_training)
        self.results.append(result)
        return result


def flat_metrics(result: AuditResult) -> dict[str, float]:
    """Numeric metrics and statuses of every probe, as ``rmaudit/<probe>/<name>`` scalars."""
    out: dict[str, float] = {}
    for probe in result.probes:
        out[f"rmaudit/{probe.name}/status"] = float(STATUS_CODES[probe.status])
        for name, value in probe.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"rmaudit/{probe.name}/{name}"] = float(value)
    out["rmaudit/gate_failed"] = float(result.gate == "fail")
    return out


def _pairs(source: str | Path | Sequence[PreferencePair]) -> Sequence[PreferencePair]:
    """A file's pairs stream into a PairStore (held for the whole training run, in a temporary
    file rather than in memory, as the audit holds its --data); given pairs are kept as a list."""
    if isinstance(source, (str, Path)):
        from rmaudit.data import read_pairs

        return read_pairs(Path(source), store=True).pairs
    return list(source)
