"""The intent benchmark experiment: one pass of a classifier over a labelled set.

Inputs (benchflow's schema: a pydantic Settings model): the **target**, a
classifier factory ``module:function`` and its ``target_args``, and the
workload (``dataset``, ``n_items``, ``data_seed``, ``dataset_url``,
``dataset_sha256``). Outputs: benchflow's common result (latency per
prediction, throughput), the quality figures declared by
:class:`IntentOutputs`, and custom metadata (the dataset's provenance, the
confusion matrix, and ``custom/misclassified.jsonl``).

Each measured request classifies one item; the measured phase is exactly one
pass over the set (``planned_requests``), so accuracy covers every item once.
Predictions are checkpointed per item (:class:`benchflow.checkpoint.ItemLog` in
the trial's ``state_dir``): a trial that was interrupted (killed, over its time
limit) resumes where it stopped when the same command runs again.
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections import Counter, defaultdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from benchflow_intent import dataset
from drivers.base import ConfigRefused, Driver, DriverError, Resources, ServiceSettings
from drivers.checkpoint import ItemLog
from drivers.download import fetch

NEEDS = Resources(cpus=1, mem_gb=0.5, gpus=0, time_min=2)


class ShippedIntentSettings(ServiceSettings):
    target: str = Field("benchflow_intent.targets:keyword", description="module:factory")
    target_args: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = NEEDS


class IntentSettings(ShippedIntentSettings):
    dataset: Literal["shipped", "generated", "url"] = "shipped"
    n_items: int = Field(200, ge=1, le=1_000_000)
    data_seed: int = 0
    dataset_url: str | None = None
    dataset_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")


class IntentOutputs(BaseModel):
    """quality(): overall figures, plus ``accuracy.<label>`` per intent."""

    model_config = ConfigDict(extra="allow")
    accuracy: float = Field(ge=0, le=1)
    macro_f1: float = Field(ge=0, le=1)
    items: int = Field(ge=1)
    unanswered: int = Field(ge=0)


class IntentBenchmark(Driver):
    name = "intent"
    family = "quality"
    description = "accuracy of an intent classifier (module:factory) over a labelled set"
    Settings = IntentSettings
    Outputs = IntentOutputs
    target_fields = ("target", "target_args")
    size_unit = "items"
    headline_figures = "quality"  # a 104-item set is not invalid for lacking a p99
    supports_clients = False  # predictions are gathered in this process

    settings: IntentSettings

    @classmethod
    def check(cls, settings, run) -> None:
        super().check(settings, run)
        if getattr(settings, "dataset", "shipped") == "url" and not (
            settings.dataset_url and settings.dataset_sha256
        ):
            raise ConfigRefused(
                "service.dataset_url",
                settings.dataset_url,
                "dataset=url needs a URL and its sha256",
            )
        if ":" not in settings.target:
            raise ConfigRefused("service.target", settings.target, "module:factory")

    def setup(self) -> None:
        # Custom metadata is kept even if the trial fails later: record as you go.
        self.trial.custom["target"] = {
            "factory": self.settings.target,
            "args": self.settings.target_args,
        }
        with self.trial.phase("dataset") as fig:
            self.items, provenance = self._load_items()
            fig["items"] = len(self.items)
        self.labels = sorted({it.label for it in self.items})
        self.trial.custom["dataset"] = {**provenance, "items": len(self.items)}
        self.trial.custom["labels"] = self.labels
        with self.trial.phase("load_target"):
            self.predict = _load_target(self.settings.target, self.settings.target_args)
        # Resume: items scored by an interrupted trial of this configuration are kept.
        self.log = ItemLog(self.trial.state_dir / "predictions.jsonl")
        done = self.log.done()
        self.predictions: list[str | None] = [
            done[it.id]["label"] if it.id in done else None for it in self.items
        ]
        self.todo = [i for i, it in enumerate(self.items) if it.id not in done]
        self.trial.custom["resumed_items"] = len(self.items) - len(self.todo)
        self.cursor = itertools.count()
        self.measuring = False

    def _load_items(self):
        s = self.settings
        kind = getattr(s, "dataset", "shipped")
        if kind == "generated":
            return dataset.generated(s.n_items, s.data_seed)
        if kind == "url":
            path = fetch(s.dataset_url, s.dataset_sha256, self.trial.data_dir, "intents.jsonl")
            return dataset.from_file(path, s.dataset_sha256)
        return dataset.shipped()

    def planned_requests(self) -> int:
        return len(self.todo)  # one pass: every item not yet scored, once

    def measure_start(self) -> None:
        self.cursor = itertools.count()  # warm-up predictions are not scored
        self.measuring = True

    def operation(self, ctx) -> int:
        if not self.measuring:
            self.predict(self.items[ctx.seq % len(self.items)].text)
            return 1
        i = self.todo[next(self.cursor)]  # next() is atomic: each item goes to one worker
        item = self.items[i]
        label = self.predict(item.text)
        if label not in self.labels:
            raise DriverError(f"the target answered {label!r}", "unknown_label")
        self.predictions[i] = label
        self.log.record(item.id, {"label": label})
        return 1

    def teardown(self) -> None:
        if getattr(self, "log", None) is not None:
            self.log.close()

    def quality(self) -> dict[str, float]:
        n = len(self.items)
        confusion: dict[str, Counter] = defaultdict(Counter)
        wrong = []
        for item, pred in zip(self.items, self.predictions, strict=True):
            confusion[item.label][pred or "(none)"] += 1
            if pred != item.label:
                wrong.append({"id": item.id, "text": item.text, "label": item.label, "got": pred})
        correct = n - len(wrong)
        out: dict[str, float] = {
            "accuracy": correct / n,
            "items": n,
            "unanswered": sum(p is None for p in self.predictions),
        }
        f1s = []
        for label in self.labels:
            tp = confusion[label][label]
            support = sum(confusion[label].values())
            predicted = sum(row[label] for row in confusion.values())
            out[f"accuracy.{label}"] = tp / support if support else 0.0
            f1s.append(2 * tp / (support + predicted) if support + predicted else 0.0)
        out["macro_f1"] = sum(f1s) / len(f1s)
        self.trial.custom["confusion"] = {k: dict(v) for k, v in sorted(confusion.items())}
        self.trial.attach_text("misclassified.jsonl", "".join(json.dumps(w) + "\n" for w in wrong))
        return out


class ShippedIntentBenchmark(IntentBenchmark):
    """The fixed experiment: its workload (the shipped set) is built in."""

    name = "intent_shipped"
    description = "accuracy of an intent classifier on the shipped 104-request set (fixed)"
    Settings = ShippedIntentSettings
    fixed = True


class IntentBenchmarkV0(ShippedIntentBenchmark):
    name = "intent_v0"
    description = "the first version of the intent benchmark"
    deprecated = "intent_v0 is kept to reproduce old results; use intent"


def _load_target(ref: str, args: dict[str, Any]):
    """The classifier: ``module:factory(**args)``. A reference that does not resolve
    is a handled error; a factory that raises is the target's own (unexpected) failure."""
    module_name, _, attr = ref.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DriverError(f"cannot load the target {ref!r}: {exc}", "target_not_found") from None
    return factory(**args)
