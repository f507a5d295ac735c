"""Expert request traces: the file format, a writer, a strict reader and a lockstep replay.

A trace is what the MoBiLE model (:mod:`golden.mobile`) asks of the expert cache while it
decodes, in order; the RTL testbench replays it through the controller and the golden
:class:`~golden.expert_cache.ExpertCacheModel` and compares, and the offloading time model
(:mod:`golden.offload`) times it.

Format, version 2 (version 1 still reads)
-----------------------------------------
UTF-8 text, one item per line, fields separated by single spaces::

    speqmoe-expert-trace 2
    # any comment (also allowed later; blank lines are ignored)
    meta n_layers 4
    meta n_experts 16
    meta <key> <value ...>
    L <step> <layer> <mode> <tokens>
    D <step> <layer> <expert> <id> <plane>
    P <step> <layer> <expert> <plane>
    X <step> <layer> <n>
    R <step> <id>

- Line 1 is exactly ``speqmoe-expert-trace 2`` (or ``1``, below); readers refuse others.
- ``meta`` lines come before the first record; keys are ``[a-z][a-z0-9_]*`` and unique;
  ``n_layers`` and ``n_experts`` are required positive integers (the range of ``layer`` and
  ``expert``). Other keys are free text (``top_k``, ``source``, ``tau``, ``policy`` ...).
- ``L``: a *layer pass* starts: the dense part of ``layer`` runs in ``mode`` (``full``: FP16,
  both planes; ``draft``: the BSFP draft) over ``tokens`` tokens (>= 1; a verify pass checks
  several at once). Every ``D``, ``P`` and ``X`` belongs to the last ``L`` before it, which
  must be of the same layer (``P`` may name any layer: a prefetch for later).
- ``D``: a *demand* request for ``plane`` (``full``: both planes; ``draft``: the draft plane
  only, a quarter of the expert's bytes) of ``(layer, expert)`` with request ``id``. Ids are
  unique and strictly increasing; the response pins what was requested.
- ``P``: a *prefetch* request (no id, no response) for ``plane`` of ``(layer, expert)``.
- ``X``: the compute of ``n`` experts (the last ``n`` demands of the layer pass) happens here,
  in the layer pass's mode; the cache and the RTL ignore it.
- ``R``: release what the demand ``id`` pinned (an earlier ``D`` not yet released).
- ``step`` is the decode step (the number of tokens generated before it); it never decreases.
  All numbers are decimal, non-negative, without sign or leading zeros.

Version 1 has no ``L`` record and no ``plane`` field: every ``D`` and ``P`` is for the full
expert (plane ``full``), and a layer pass of one token in ``full`` mode starts at the first
``D`` or ``P`` after an ``X`` (or at the start). :func:`parse_trace` reads both versions (the
records of a version-1 trace have ``plane == "full"``); :func:`format_trace` writes version 1
when a trace has no ``L`` record and only full planes, so version-1 traces round-trip.

Anything else is malformed: the reader raises ``ValueError("<name>:<line>: ...")``.

Replay semantics (:func:`replay`): lockstep, in file order. A ``D`` that would wait is an error
(a lockstep testbench would deadlock: the trace holds too many pins for the cache); an ``R``
of a demand whose fill failed (``error``) is skipped, because nothing was pinned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

MAGIC = "speqmoe-expert-trace"
VERSION = 2
VERSIONS = (1, 2)
PLANES = ("full", "draft")
MODES = ("full", "draft")
_KEY = re.compile(r"[a-z][a-z0-9_]*\Z")
_NUM = re.compile(r"(0|[1-9][0-9]*)\Z")
_FIELDS_V1 = {"D": ("step", "layer", "expert", "id"), "P": ("step", "layer", "expert"),
              "X": ("step", "layer", "n"), "R": ("step", "id")}
_FIELDS_V2 = {**_FIELDS_V1, "D": ("step", "layer", "expert", "id", "plane"),
              "P": ("step", "layer", "expert", "plane"), "L": ("step", "layer", "mode", "tokens")}
_FIELDS = {1: _FIELDS_V1, 2: _FIELDS_V2}
_WORDS = {"plane": PLANES, "mode": MODES}


@dataclass(frozen=True)
class TraceRecord:
    """One trace line. Unused fields are ``None``."""

    op: str
    step: int
    layer: int | None = None
    expert: int | None = None
    id: int | None = None
    n: int | None = None
    plane: str | None = None       # D and P: "draft", or "full" (None, as read from version 1)
    mode: str | None = None        # L: "full" or "draft"
    tokens: int | None = None      # L: tokens of the layer pass

    def fields(self, version: int = VERSION) -> list:
        return [(self.plane or "full") if name == "plane" else getattr(self, name)
                for name in _FIELDS[version][self.op]]


@dataclass
class Trace:
    """A request trace: ``meta`` (ordered dict of strings) and ``records``."""

    meta: dict[str, str]
    records: list[TraceRecord] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def n_experts(self) -> int:
        return int(self.meta["n_experts"])

    def count(self, op: str) -> int:
        return sum(1 for r in self.records if r.op == op)

    @property
    def version(self) -> int:
        """The format version this trace needs: 1 unless it has ``L`` records or draft
        planes."""
        needs_v2 = any(r.op == "L" or r.plane == "draft" for r in self.records)
        return 2 if needs_v2 else 1


class TraceBuilder:
    """Builds a valid trace: assigns demand ids and tracks releases."""

    def __init__(self, n_layers: int, n_experts: int, **meta):
        self.trace = Trace({"n_layers": str(n_layers), "n_experts": str(n_experts),
                            **{k: str(v) for k, v in meta.items()}})
        self._next_id = 0

    def layer(self, step: int, layer: int, mode: str = "full", tokens: int = 1) -> None:
        """A layer pass starts (version 2)."""
        self.trace.records.append(TraceRecord("L", step, layer, mode=mode, tokens=tokens))

    def demand(self, step: int, layer: int, expert: int, plane: str | None = None) -> int:
        rid = self._next_id
        self._next_id += 1
        self.trace.records.append(TraceRecord("D", step, layer, expert, id=rid, plane=plane))
        return rid

    def prefetch(self, step: int, layer: int, expert: int, plane: str | None = None) -> None:
        self.trace.records.append(TraceRecord("P", step, layer, expert, plane=plane))

    def compute(self, step: int, layer: int, n: int) -> None:
        self.trace.records.append(TraceRecord("X", step, layer, n=n))

    def release(self, step: int, rid: int) -> None:
        self.trace.records.append(TraceRecord("R", step, id=rid))


def format_trace(trace: Trace) -> str:
    """The trace as text (validated: formatting an invalid trace raises ``ValueError``)."""
    version = trace.version
    lines = [f"{MAGIC} {version}"]
    for key, value in trace.meta.items():
        value = str(value)
        if "\n" in value or value != value.strip() or not value:
            raise ValueError(f"meta {key}: value must be one non-empty line without outer spaces")
        lines.append(f"meta {key} {value}")
    for r in trace.records:
        lines.append(" ".join([r.op] + [str(v) for v in r.fields(version)]))
    text = "\n".join(lines) + "\n"
    parse_trace(text, name="<trace>")       # the writer never writes what the reader refuses
    return text


def write_trace(path: str | Path, trace: Trace) -> None:
    Path(path).write_text(format_trace(trace), encoding="utf-8")


def read_trace(path: str | Path) -> Trace:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    return parse_trace(text, name=str(path))


def parse_trace(text: str, *, name: str = "<trace>") -> Trace:
    """Parse and validate trace text; see the module docstring for the rules."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()

    def bad(lineno: int, message: str):
        raise ValueError(f"{name}:{lineno}: {message}")

    if not lines:
        bad(1, f"empty file; expected '{MAGIC} {VERSION}'")
    head = lines[0].split(" ")
    if len(head) != 2 or head[0] != MAGIC:
        bad(1, f"not an expert trace: expected '{MAGIC} {VERSION}', found {lines[0][:60]!r}")
    if head[1] not in [str(v) for v in VERSIONS]:
        bad(1, f"unsupported trace version {head[1]!r} (this reader reads versions "
               f"{', '.join(str(v) for v in VERSIONS)})")
    version = int(head[1])
    fields_of = _FIELDS[version]
    current_layer = None          # version 2: the layer of the last L record
    meta: dict[str, str] = {}
    records: list[TraceRecord] = []
    n_layers = n_experts = None
    last_step = 0
    last_id = -1
    open_ids: set[int] = set()
    released: set[int] = set()
    for lineno, line in enumerate(lines[1:], start=2):
        if line.strip() == "" or line.startswith("#"):
            continue
        if line != line.strip() or "  " in line or "\t" in line or "\r" in line:
            bad(lineno, "fields must be separated by single spaces, without leading or "
                        "trailing blanks")
        parts = line.split(" ")
        op = parts[0]
        if op == "meta":
            if records:
                bad(lineno, "meta lines must come before the first record")
            if len(parts) < 3:
                bad(lineno, "meta line needs a key and a value")
            key, value = parts[1], " ".join(parts[2:])
            if not _KEY.match(key):
                bad(lineno, f"bad meta key {key!r}")
            if key in meta:
                bad(lineno, f"duplicate meta key {key!r}")
            if key in ("n_layers", "n_experts"):
                if not _NUM.match(value) or int(value) < 1:
                    bad(lineno, f"meta {key} must be a positive integer, not {value!r}")
            meta[key] = value
            continue
        if op not in fields_of:
            bad(lineno, f"unknown record type {op!r} (expected "
                        f"{', '.join(sorted(fields_of))} or meta in version {version})")
        if n_layers is None:
            if "n_layers" not in meta or "n_experts" not in meta:
                bad(lineno, "meta n_layers and meta n_experts are required before the records")
            n_layers, n_experts = int(meta["n_layers"]), int(meta["n_experts"])
        names = fields_of[op]
        if len(parts) - 1 != len(names):
            bad(lineno, f"{op} record needs {len(names)} fields ({' '.join(names)}), "
                        f"found {len(parts) - 1}")
        values = {}
        for fname, text_value in zip(names, parts[1:]):
            if fname in _WORDS:
                if text_value not in _WORDS[fname]:
                    bad(lineno, f"{fname} must be one of {', '.join(_WORDS[fname])}, "
                                f"not {text_value!r}")
                values[fname] = text_value
                continue
            if not _NUM.match(text_value):
                bad(lineno, f"{fname} must be a non-negative decimal integer, not {text_value!r}")
            values[fname] = int(text_value)
        if op == "L":
            if values["tokens"] < 1:
                bad(lineno, "an L record needs tokens >= 1")
            current_layer = values["layer"]
        elif version == 2 and op in ("D", "X"):
            if current_layer is None:
                bad(lineno, f"{op} record before the first L record (version 2)")
            if values["layer"] != current_layer:
                bad(lineno, f"{op} record of layer {values['layer']} inside the layer pass of "
                            f"layer {current_layer}")
        if values["step"] < last_step:
            bad(lineno, f"step {values['step']} is before the previous step {last_step}")
        last_step = values["step"]
        if "layer" in values and values["layer"] >= n_layers:
            bad(lineno, f"layer {values['layer']} out of range 0..{n_layers - 1}")
        if "expert" in values and values["expert"] >= n_experts:
            bad(lineno, f"expert {values['expert']} out of range 0..{n_experts - 1}")
        if op == "D":
            if values["id"] <= last_id:
                bad(lineno, f"demand id {values['id']} is not greater than the previous id "
                            f"{last_id}")
            last_id = values["id"]
            open_ids.add(last_id)
        elif op == "R":
            rid = values["id"]
            if rid in released:
                bad(lineno, f"demand {rid} is released twice")
            if rid not in open_ids:
                bad(lineno, f"release of demand {rid}, which has not been requested")
            open_ids.discard(rid)
            released.add(rid)
        records.append(TraceRecord(op, **values))
    if n_layers is None and ("n_layers" not in meta or "n_experts" not in meta):
        bad(len(lines), "meta n_layers and meta n_experts are required")
    return Trace(meta, records)


def replay(trace: Trace, cache) -> list:
    """Replay ``trace`` in lockstep through an :class:`~golden.expert_cache.ExpertCacheModel`.

    Returns the :class:`~golden.expert_cache.AccessResult` of every ``D`` and ``P`` record, in
    order. Raises ``ValueError`` if a demand would wait (the cache is too small for the pins the
    trace holds at once).
    """
    if any(r.plane == "draft" for r in trace.records):
        raise ValueError("the trace requests draft planes: replay it through a plane cache "
                         "(golden.offload.simulate with plane_cache=True)")
    results = []
    slot_of: dict[int, int | None] = {}
    for r in trace.records:
        if r.op in ("D", "P"):
            res = cache.access(r.layer, r.expert, "demand" if r.op == "D" else "prefetch")
            if r.op == "D":
                if res.waited:
                    raise ValueError(f"demand {r.id} (step {r.step}, layer {r.layer}, expert "
                                     f"{r.expert}) would wait forever: {res.reason} "
                                     f"with {cache.slots} slots")
                slot_of[r.id] = None if res.error else res.slot
            results.append(res)
        elif r.op == "R":
            slot = slot_of.pop(r.id, None)
            if slot is not None:
                cache.release(slot)
    return results


def demands_per_step(trace: Trace) -> Iterable[tuple[int, int]]:
    """``(step, number of D records)`` in step order."""
    counts: dict[int, int] = {}
    for r in trace.records:
        if r.op == "D":
            counts[r.step] = counts.get(r.step, 0) + 1
    return sorted(counts.items())
