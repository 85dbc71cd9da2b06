"""HistoryStore: how each zoo model performed on each historical task, with the provenance of every number.

A record is one (task, model, kind, seed) measurement. Kinds:
    finetune      accuracy of the fully fine-tuned model on the task's held-out split
    linear_probe  accuracy of a logistic-regression head on frozen features, same held-out split
    proxy         an aggregated transferability-estimator ranking score (no training; higher is better)
    logme         LogME of the model's frozen features on the task's training part (no training; its scale
                  differs between tasks, so compare it within a task)

On disk a store is a plain CSV (one row per record, columns :data:`COLUMNS`) that opens in any spreadsheet.
Duplicates are resolved by one rule: for a (task, model, kind, seed) key the record added last wins, so merging
shard files in any order gives the same store as long as no key was measured twice, and re-measuring a pair
replaces its old value. A pair measured with several seeds (fine-tuning runs repeated to measure their noise)
has one record per seed; :meth:`HistoryStore.matrix` gives their mean, or one seed's values.

Examples:
    >>> store = HistoryStore.load("data/benchmarks/offline/history.csv")
    >>> tasks, models, acc = store.matrix("finetune")   # NaN where a pair was not measured; mean over seeds
    >>> _, _, run1 = store.matrix("finetune", seed=1)      # only the runs with seed 1
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ranker.files import write_atomic

KINDS = ("finetune", "linear_probe", "proxy", "logme")


class HistoryError(ValueError):
    """A history file or record is malformed; the message names the problem and the fix."""


@dataclass(frozen=True)
class Record:
    """One measurement of a model on a task, with how it was made.

    Fields a kind does not use keep their defaults (e.g. ``epochs`` of a linear probe is 0).
    """

    task: str  # task id: the benchmark's TaskSpec.id
    model: str  # zoo model name
    kind: str  # one of KINDS
    metric: str  # what value measures, e.g. top1_accuracy (percent) or proxy_score
    value: float  # the measurement; higher is better for every metric stored
    recipe: str = ""  # name of the fixed recipe that produced it, e.g. finetune-v1
    epochs: int = 0  # training epochs (finetune)
    lr: float = math.nan  # learning rate (finetune)
    input_size: int = 0  # square input resolution the model was fed
    n_train: int = 0  # samples the model was trained or fitted on
    n_test: int = 0  # held-out samples the accuracy was measured on
    seed: int = 0  # seed of the run (0 for deterministic kinds)
    wall_s: float = math.nan  # wall-clock seconds of the measurement
    device: str = ""  # where it ran: cpu, cuda:0, ... ("published" for numbers taken from a paper)
    source: str = ""  # free text: who measured it, or the citation of a published number

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise HistoryError(f"record ({self.task}, {self.model}) has kind {self.kind!r}; use one of {KINDS}")
        if not self.task or not self.model:
            raise HistoryError("a record needs a non-empty task id and model name")
        if not math.isfinite(self.value):
            raise HistoryError(f"record ({self.task}, {self.model}, {self.kind}) has value {self.value}; "
                               "store only finite measurements (a missing pair is simply not recorded)")

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.task, self.model, self.kind, self.seed


COLUMNS = tuple(f.name for f in dataclasses.fields(Record))
_TYPES = {f.name: f.type for f in dataclasses.fields(Record)}


def parse_field(name: str, text: str) -> int | float | str:
    """One CSV cell as the type of ``Record``'s field ``name`` (what the history file and an import both read).

    Raises:
        ValueError: ``text`` is not of that type (the message names the column).
    """
    kind = _TYPES[name]
    try:
        return int(text) if kind == "int" else float(text) if kind == "float" else text
    except ValueError:
        raise ValueError(f"column {name} holds {text!r}, not {'an integer' if kind == 'int' else 'a number'}") \
            from None


def _parse(row: dict[str, str], where: str) -> Record:
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise HistoryError(f"{where} lacks column(s) {missing}; a history CSV has the columns {list(COLUMNS)}")
    try:
        return Record(**{name: parse_field(name, row[name]) for name in COLUMNS})
    except ValueError as err:
        raise HistoryError(f"{where}: {err}") from None


class HistoryStore:
    """An in-memory set of records keyed by (task, model, kind, seed); see the module docstring for the rules."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: dict[tuple[str, str, str, int], Record] = {}
        self.add(records)

    def add(self, records: Record | Iterable[Record]) -> None:
        """Adds records; a record replaces an earlier one with the same (task, model, kind, seed)."""
        for record in [records] if isinstance(records, Record) else records:
            self._records.pop(record.key, None)  # re-insert so iteration order is the order of last addition
            self._records[record.key] = record

    def merge(self, other: HistoryStore) -> None:
        """Adds every record of ``other``; its records win over this store's on equal keys."""
        self.add(other.records())

    def records(self, kind: str | None = None) -> list[Record]:
        """All records (of one kind), in the order they were last added."""
        return [r for r in self._records.values() if kind is None or r.kind == kind]

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: tuple[str, str, str, int]) -> bool:
        return key in self._records

    def get(self, task: str, model: str, kind: str, seed: int = 0) -> Record | None:
        return self._records.get((task, model, kind, seed))

    def seeds(self, kind: str) -> list[int]:
        """The seeds that records of ``kind`` were measured with, ascending."""
        return sorted({r.seed for r in self.records(kind)})

    def tasks(self, kind: str | None = None) -> list[str]:
        """Task ids in order of first appearance."""
        return list(dict.fromkeys(r.task for r in self.records(kind)))

    def models(self, kind: str | None = None) -> list[str]:
        """Model names in order of first appearance."""
        return list(dict.fromkeys(r.model for r in self.records(kind)))

    def matrix(
        self, kind: str, tasks: list[str] | None = None, models: list[str] | None = None, seed: int | None = None
    ) -> tuple[list[str], list[str], np.ndarray]:
        """The task × model matrix of one kind's values, NaN for pairs without a record.

        Args:
            kind: which measurements to put in the matrix.
            tasks: row order; default: the tasks that have a record of this kind.
            models: column order; default: the models that have a record of this kind.
            seed: only the records of this seed; None: each pair's mean over the seeds it was measured with.

        Returns:
            (tasks, models, values) with values float64 [len(tasks), len(models)].
        """
        if kind not in KINDS:
            raise HistoryError(f"unknown kind {kind!r}; use one of {KINDS}")
        tasks = self.tasks(kind) if tasks is None else list(tasks)
        models = self.models(kind) if models is None else list(models)
        row, col = {t: i for i, t in enumerate(tasks)}, {m: j for j, m in enumerate(models)}
        total, count = np.zeros((len(tasks), len(models))), np.zeros((len(tasks), len(models)))
        for r in self.records(kind):
            if r.task in row and r.model in col and seed in (None, r.seed):
                total[row[r.task], col[r.model]] += r.value
                count[row[r.task], col[r.model]] += 1
        return tasks, models, np.where(count > 0, total / np.maximum(count, 1), np.nan)

    @classmethod
    def load(cls, path: str | Path) -> HistoryStore:
        """Reads a history CSV written by :meth:`save` (or by hand with the same columns)."""
        path = Path(path)
        if not path.is_file():
            raise HistoryError(f"history file {path} not found; build it (see data/benchmarks/README.md) or pass "
                               "an existing CSV")
        with path.open(newline="") as f:
            return cls(_parse(row, f"{path}:{i + 2}") for i, row in enumerate(csv.DictReader(f)))

    def save(self, path: str | Path) -> None:
        """Writes the CSV atomically: readers see the old file or the new one, never half of one."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in self._records.values():
            writer.writerow({k: _format(v) for k, v in dataclasses.asdict(r).items()})
        write_atomic(path, text.getvalue().encode())


def _format(value: object) -> object:
    """Floats with 6 significant digits keep the CSV small and diffs readable (accuracies have 4 at most)."""
    return f"{value:.6g}" if isinstance(value, float) else value
