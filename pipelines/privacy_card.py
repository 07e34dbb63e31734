"""The privacy card: PRIVACY.md (and its facts, PRIVACY.json) beside every ONNX file a stage
writes, the document a data-protection officer asks for.

It says what the model is, what the training data's role was and what the other splits were
used for, the guarantee (ε, δ, accountant, noise mode; a defense or a non-private step: ε = ∞),
what ε covers and what it does not for this run, the steps that made the file, its test
accuracy, the date (UTC, no time: a resumed run writes the card an uninterrupted one does) and
the version.

The card ships with the model, so it holds nothing computed from the members that ε does not
cover: it names the attacks the data owner's audit runs on the artifact and says where their
results live (the run directory, which does not ship), never the results. Only with
`export.attack_metadata = true` does it also show the strongest attack numbers the ONNX files
carry, under a heading that labels them as the metadata does (ATTACK_METADATA_NOTE).

`card_facts(ctx, ...)` gathers the facts at stage time (from the ONNX files' own metadata, so
card and file agree, and the run's context); `privacy_card_markdown(facts)` is a pure function
of them (the report renders the same card); `write_privacy_card` writes both files atomically.
Neither file is part of an artifact's hash (pipelines.artifacts hashes the ONNX file alone).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from attacks.suite import attacks_for_release
from models.io import read_arch
from models.onnx_io import read_metadata
from pipelines.artifacts import MODEL, onnx_params
from pipelines.context import RunContext
from pipelines.data import SPLIT_NAMES
from pipelines.onnx_metadata import ATTACK_KEYS, ATTACK_METADATA_NOTE
from pipelines.rundir import write_atomic, write_json
from pipelines.settings.compression import DistillSettings, PruneSettings
from pipelines.settings.training import TrainFLSettings
from pipelines.spend import Spend
from privacy.accounting import format_epsilon
from privacy.randomness import REPRODUCIBLE, REPRODUCIBLE_WARNING

CARD_FILE = "PRIVACY.md"
FACTS_FILE = "PRIVACY.json"
REPORT_FILES = ("report.html", "report.md", "summary.json")  # the data owner's, in the run dir
NOT_DP_HEADING = "Not differential privacy: ε = ∞"
NOT_PRIVATE_HEADING = "Not private: ε = ∞"
# What each defense reads of the public split (README, "Membership-inference defenses").
DEFENSE_PUBLIC_USE = {
    "adversarial-regularization": "the inference adversary's non-member reference set",
    "mixup-mmd": "the validation set of the MMD penalty",
    "trust-score-masking": "the trust-score index (shipped inside the model) and its threshold",
    "knowledge-distillation": "the student's transfer set (inputs only)",
}

__all__ = [
    "CARD_FILE",
    "FACTS_FILE",
    "CardFacts",
    "CardFile",
    "CardStep",
    "card_facts",
    "privacy_card_markdown",
    "read_card_facts",
    "write_privacy_card",
]


# ---- the facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardFile:
    """One ONNX file beside the card. `attack`: the privcomp.attack.* values it carries, only
    when the user opted in (export.attack_metadata), else None."""

    name: str
    description: str
    params: int
    test_accuracy: float | None
    epsilon: float | None  # the file's own (metadata): None, not private
    attack: dict[str, Any] | None = None


@dataclass(frozen=True)
class CardStep:
    """One stage of the file's history. privacy: "dp" (a DP mechanism on the members),
    "none" (read the members without DP), "post-processing", or "audit" (evaluate)."""

    stage: str
    privacy: str
    description: str


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, JSON-serialisable (to_json / from_json). epsilon None: not
    private (∞). attacks: the names the audit runs on `attacked_file`."""

    version: str
    date: str
    stage_dir: str
    dataset: str
    architecture: str
    input_shape: list[int]
    num_classes: int
    # None with reproducible noise: the seed would rebuild the noise, so it stays off the card.
    seed: int | None
    splits: dict[str, int]
    public_uses: list[str]
    test_uses: list[str]
    files: list[CardFile]
    epsilon: float | None
    delta: float | None
    accountant: str | None
    noise: str
    noise_note: str
    defense: str | None
    release: str
    steps: list[CardStep]
    total_epsilon: float | None
    total_delta: float | None
    attacks: list[str]
    attacked_file: str
    attack_metadata: bool
    searched: list[str] = field(default_factory=list)  # stages that ran a private search
    # Set by `pipeline sweep` when this file is one of several points on the same members.
    selection: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardFacts:
        values = dict(data)
        values["files"] = [CardFile(**f) for f in data["files"]]
        values["steps"] = [CardStep(**s) for s in data["steps"]]
        return cls(**values)

    @property
    def private(self) -> bool:
        return self.epsilon is not None


def read_card_facts(folder: Path) -> CardFacts:
    """The facts of the card in a stage folder (PRIVACY.json)."""
    return CardFacts.from_json(json.loads((folder / FACTS_FILE).read_text()))


def _json(metadata: dict[str, str], key: str) -> Any:
    return json.loads(metadata[key]) if key in metadata else None


def _step_descriptions(
    ctx: RunContext, stage: str, metrics: dict[str, Any], spend_kind: str
) -> tuple[str, list[str], list[str]]:
    """(what the stage did, what it read of the public split, of the test split)."""
    config = ctx.config
    record = metrics.get("compression", {})
    searched = "search" in metrics
    search = "; a private hyper-parameter search, scored on the public split" if searched else ""
    if stage == "train-ladp":
        public = ["LADP's layer sensitivities (Fisher information) and allocation"]
        if searched:
            public.append("the private search's scores")
        return f"LADP (layer-wise adaptive DP-SGD) on the members{search}", public, []
    if stage == "train-dpsgd":
        public = ["the private search's scores"] if searched else []
        return f"DP-SGD (Opacus, flat clipping) on the members{search}", public, []
    if stage == "train":
        defense = config.defense()
        if defense is None:
            return "trained on the members without DP (Adam)", [], []
        uses = [DEFENSE_PUBLIC_USE[defense.name]] if defense.name in DEFENSE_PUBLIC_USE else []
        what = f"trained on the members with the {defense.name} defense ({defense.paper})"
        return f"{what}; not differential privacy", uses, []
    if stage == "train-fl":
        return _federated_description(config.train_fl)
    if stage == "prune":
        return _prune_description(config.prune, record.get("prune", {}))
    if stage == "distill":
        return _distill_description(config.section("distill"))
    if stage == "export":
        return "fp32 ONNX export, checked against torch", [], ["the ONNX export's check"]
    if stage == "quantize":
        return _quantize_description(record, spend_kind)
    if stage == "evaluate":
        return "the data owner's audit (attacks only; the artifact is unchanged)", [], []
    return stage, [], []


def _prune_description(
    cfg: PruneSettings, record: dict[str, Any]
) -> tuple[str, list[str], list[str]]:
    settings = record.get("settings", {})
    ratio = float(settings.get("ratio", cfg.ratio))
    importance = str(settings.get("importance", cfg.importance))
    finetune = str(record.get("finetune", cfg.finetune))
    public = []
    if importance == "taylor":
        public.append("prune's channel importance (Taylor)")
    text = f"structured pruning, {ratio:.0%} of the channels removed ({importance} importance)"
    if finetune == "public":
        public.append("prune's fine-tune")
        text += ", fine-tuned on the public split"
    elif finetune == "ladp":
        public.append("the DP fine-tune's layer sensitivities")
        text += ", DP fine-tune (LADP) on the members, composed with the training's accountant"
    return text, public, []


def _federated_description(cfg: TrainFLSettings) -> tuple[str, list[str], list[str]]:
    split = f"the members split among {cfg.clients} clients ({cfg.partition}), {cfg.rounds} rounds"
    sends = {"none": "", "int8": ", int8 updates", "topk": f", top-{cfg.topk_fraction:g} updates"}
    public = []
    if cfg.privacy == "record":
        engine = "LADP" if cfg.engine == "ladp" else "DP-SGD"
        text = f"federated (Flower), {split}: each client runs {engine} on its own records"
        if cfg.engine == "ladp":
            public.append("LADP's layer sensitivities (Fisher information) and allocation")
    else:
        text = (
            f"federated (Flower), {split}: the server clips each client's update and adds "
            "Gaussian noise to their sum (central DP for one client; the record-level ε above "
            "bounds two client steps)"
        )
    return text + sends[cfg.update_compression], public, []


def _distill_description(cfg: Any) -> tuple[str, list[str], list[str]]:
    assert isinstance(cfg, DistillSettings)
    if cfg.mode == "pate":
        text = (
            f"PATE: {cfg.teachers} teachers on disjoint shards of the members, a {cfg.student} "
            f"student on {cfg.queries} public queries labelled by GNMax (accounted)"
        )
        return text, ["PATE's queries (the student's training set)"], []
    text = f"a {cfg.student} student trained on the public split with the teacher's soft labels"
    return text, ["the student's transfer set"], []


def _quantize_description(record: dict[str, Any], spend_kind: str) -> tuple[str, list[str], list]:
    quantized = record.get("quantize", {})
    mode = str(quantized.get("mode", "?"))
    asked = str(quantized.get("settings", {}).get("mode", mode))
    data = quantized.get("data", {})
    calibration = str(data.get("calibration", "none"))
    text = f"int8 {mode}"
    public: list[str] = []
    if asked == "auto":
        text += " (auto: the fastest candidate timed on public examples)"
        public.append("quantize auto's timing and accuracy check")
    if calibration != "none":
        samples = f"{data.get('calibration_samples')} {calibration} examples"
        chosen = mode == "static" or asked == "static"
        text += (
            f", calibrated on {samples}"
            if chosen
            else f"; its static candidate (not kept) calibrated on {samples}"
        )
        if calibration == "public":
            public.append("int8 calibration")
    if spend_kind == "none":
        text += " (the members read without DP: not private)"
    test = ["the fp32 export's check"] if "export" in record else []
    return text, public, test


def _file_description(name: str, metadata: dict[str, str]) -> str:
    quantization = _json(metadata, "privcomp.quantization")
    if quantization:
        return f"int8 ONNX ({quantization})"
    return "fp32 ONNX"


def _architecture(ctx: RunContext) -> str:
    source = ctx.artifacts.get(MODEL)
    if source is not None and (source / "arch.json").is_file():
        return str(read_arch(source)["name"])
    return ctx.config.run.model


def card_facts(
    ctx: RunContext,
    *,
    stage: str,
    files: list[Path],
    spend: Spend,
    record: dict[str, Any],
) -> CardFacts:
    """The facts of the card for the ONNX `files` the current stage wrote (the last one is the
    stage's output, the one the audit attacks), read from their own metadata and the context.
    spend: the stage's; record: its compression record (what it chose)."""
    metas = [read_metadata(path) for path in files]
    output = metas[-1]
    history = list(ctx.history)
    entries = [e for e in ctx.ledger.entries if e["kind"] != "earlier-release"]
    kinds = [str(e["kind"]) for e in entries[: len(history)]]
    # The steps of this file's lineage: from the last stage that started one (a training stage,
    # a PATE student); an earlier lineage's release is in the run's total, stated beside its ε.
    starts = [i for i, e in enumerate(entries[: len(history)]) if e.get("lineage") == "new"]
    start = starts[-1] if starts else ctx.trained_at
    steps: list[CardStep] = []
    public_uses: list[str] = []
    test_uses = ["test accuracy of every stage"]
    searched: list[str] = []
    # A hand-built context (a test) may lack ledger entries or metrics of earlier stages.
    kinds += ["unknown"] * (len(history) - len(kinds))
    metrics_of = [*ctx.stage_metrics[: len(history)]]
    metrics_of += [{}] * (len(history) - len(metrics_of))
    for name, kind, metrics in zip(
        [*history[start:], stage],
        [*kinds[start:], spend.kind],
        [*metrics_of[start:], {"compression": record}],
        strict=True,
    ):
        text, public, test = _step_descriptions(ctx, name, metrics, kind)
        privacy = "audit" if name == "evaluate" else kind
        steps.append(CardStep(name, privacy, text))
        public_uses += public
        test_uses += test
        if "search" in metrics:
            searched.append(name)
    card_files = []
    for path, meta in zip(files, metas, strict=True):
        attack = None
        if "privcomp.attack.note" in meta:
            attack = {k: _json(meta, f"privcomp.attack.{k}") for k in ATTACK_KEYS}
        params = onnx_params(onnx.load(str(path)))
        accuracy = _json(meta, "privcomp.test_accuracy")
        description = _file_description(path.name, meta)
        epsilon = _json(meta, "privcomp.epsilon")
        card_files.append(CardFile(path.name, description, params, accuracy, epsilon, attack))
    defense = _json(output, "privcomp.defense")
    release = str(_json(output, "privcomp.release") or "scores")
    total = ctx.ledger.total()
    return CardFacts(
        version=str(_json(output, "privcomp.version")),
        date=datetime.now(UTC).date().isoformat(),
        stage_dir=ctx.stage_dir.name,
        dataset=ctx.dataset.name,
        architecture=_architecture(ctx),
        input_shape=list(ctx.dataset.in_shape),
        num_classes=ctx.dataset.num_classes,
        seed=None if ctx.noise_mode == REPRODUCIBLE else ctx.seed,
        splits={name: len(ctx.splits[name]) for name in SPLIT_NAMES},
        public_uses=list(dict.fromkeys(public_uses)),
        test_uses=list(dict.fromkeys(test_uses)),
        files=card_files,
        epsilon=_json(output, "privcomp.epsilon"),
        delta=_json(output, "privcomp.delta"),
        accountant=_json(output, "privcomp.accountant"),
        noise=str(_json(output, "privcomp.noise")),
        noise_note=str(_json(output, "privcomp.noise_note")),
        defense=defense,
        release=release,
        steps=steps,
        total_epsilon=total.epsilon,
        total_delta=total.delta,
        attacks=attacks_for_release(list(ctx.attacks_planned), release)
        if ctx.attacks_planned
        else [],
        attacked_file=files[-1].name,
        attack_metadata="privcomp.attack.note" in output,
        searched=searched,
    )


def write_privacy_card(
    ctx: RunContext,
    *,
    stage: str,
    files: list[Path],
    spend: Spend,
    record: dict[str, Any],
) -> Path:
    """Write PRIVACY.md and PRIVACY.json beside the files (one folder); the card's path."""
    facts = card_facts(ctx, stage=stage, files=files, spend=spend, record=record)
    folder = files[-1].parent
    write_json(folder / FACTS_FILE, facts.to_json())
    card = folder / CARD_FILE
    write_atomic(card, privacy_card_markdown(facts))
    return card


# ---- the markdown ---------------------------------------------------------------------------


def _epsilon(epsilon: float | None) -> str:
    """ε as the product prints it (rounded up), ∞ when not private."""
    return "∞" if epsilon is None else format_epsilon(epsilon)


def _eps(facts: CardFacts) -> str:
    return f"ε = {_epsilon(facts.epsilon)}"


def _guarantee_line(facts: CardFacts) -> str:
    if facts.defense is not None:
        return f"{NOT_DP_HEADING} (defense: {facts.defense})"
    if not facts.private:
        return NOT_PRIVATE_HEADING
    return f"{_eps(facts)}, δ = {facts.delta:g} (accountant: {facts.accountant})"


def _warnings(facts: CardFacts) -> list[str]:
    lines = []
    if facts.noise == REPRODUCIBLE:
        lines.append(
            f"**Warning: {REPRODUCIBLE_WARNING}.** The seed is recorded in the run's "
            "config.toml (and left out of this card): whoever has it can rebuild the noise, so "
            "the guarantee below does not hold against them. This file is for experiments, not "
            "for release."
        )
    reads = [s.stage for s in facts.steps if s.privacy == "none"]
    if facts.defense is not None:
        lines.append(
            f"**{NOT_DP_HEADING}.** This model was trained with the membership-inference "
            f"defense `{facts.defense}`, a heuristic: it lowers what the audit's attacks measure "
            "on this data and promises nothing against an attack nobody ran."
        )
        beside = [stage for stage in reads if stage != "train"]
        if beside:
            lines.append(
                f"**Also read without DP or defense:** the members, by {', '.join(beside)} "
                "(see the steps below): the defense says nothing of what those steps took."
            )
    if facts.selection is not None:
        lines.append(_selection_warning(facts.selection))
    if facts.defense is None and not facts.private:
        lines.append(
            f"**{NOT_PRIVATE_HEADING}.** The members were read without a DP mechanism "
            f"({', '.join(reads) or 'see the steps below'}): this model carries no privacy "
            "guarantee."
        )
    return lines


def _selection_warning(selection: dict[str, Any]) -> str:
    composed = selection.get("composed_epsilon")
    words = (
        f"ε = {_epsilon(composed)}, δ = {selection.get('composed_delta'):g}"
        if composed is not None
        else "ε = ∞ (a point read the members without DP)"
    )
    return (
        f"**One of {selection['points']} sweep points on the same members** (sweep "
        f"`{selection['sweep']}`, sweep.json). This file's own ε holds for it released alone; "
        f"if it was chosen among the points, or several are shipped, what holds is the "
        f"composed {words}. A choice made by the attack results reads the members again and "
        "is covered by neither."
    )


def note_selection(folder: Path, selection: dict[str, Any]) -> None:
    """Add (or replace) the sweep's selection note in the card of a folder, both files."""
    facts = replace(read_card_facts(folder), selection=selection)
    write_json(folder / FACTS_FILE, facts.to_json())
    write_atomic(folder / CARD_FILE, privacy_card_markdown(facts))


def _model_section(facts: CardFacts) -> list[str]:
    shape = "×".join(str(d) for d in facts.input_shape)
    lines = [
        "## The model",
        "",
        f"- Architecture: `{facts.architecture}`; input {shape} (channels × height × width); "
        f"{facts.num_classes} classes",
        f"- Data set: `{facts.dataset}`",
        f"- Answers a query with: {facts.release}",
        "",
        "| file | format | parameters | test accuracy | ε |",
        "|---|---|---|---|---|",
    ]
    for f in facts.files:
        accuracy = "–" if f.test_accuracy is None else f"{f.test_accuracy:.4f}"
        eps = _epsilon(f.epsilon)
        lines.append(f"| `{f.name}` | {f.description} | {f.params:,} | {accuracy} | {eps} |")
    lines += ["", "Test accuracy is measured on the test split (declared public, see below)."]
    return lines


def _guarantee_section(facts: CardFacts) -> list[str]:
    lines = ["## The guarantee", "", f"- {_guarantee_line(facts)}"]
    if facts.private:
        lines.append(
            "- Record-level (ε, δ)-differential privacy under add/remove neighbours (one "
            "member more or fewer), for the files above, their metadata and this card (the "
            "number of members it states is public: the accounting reads it)."
        )
    if facts.private or facts.noise == REPRODUCIBLE:
        lines.append(f"- Noise: {facts.noise_note}")
    if facts.private and facts.total_epsilon != facts.epsilon:
        total = _epsilon(facts.total_epsilon)
        lines.append(
            f"- This run directory released more than this file's lineage: the members' total "
            f"so far is ε = {total} (ledger.json `total`), which covers shipping several of "
            "its artifacts together."
        )
    return lines


SPLIT_ROLES = {
    "members": "the private training set",
    "nonmembers": "private, held out from the same pool; never trained on; the audit's negatives",
    "population": "the auditor's attacker data (reference models); not trained on",
}


def _data_section(facts: CardFacts) -> list[str]:
    lines = [
        "## The training data and the other splits",
        "",
        "| split | records | role for this model |",
        "|---|---|---|",
    ]
    for name, count in facts.splits.items():
        if name == "public":
            uses = "; ".join(facts.public_uses) or "not read by this model's steps"
            role = f"declared public, costs no ε: {uses}"
        elif name == "test":
            role = f"declared public: {'; '.join(facts.test_uses)}"
        else:
            role = SPLIT_ROLES.get(name, "")
            if name == "members" and facts.private:
                role += ": what ε protects"
        lines.append(f"| {name} | {count:,} | {role} |")
    return lines


PRIVACY_WORDS = {
    "dp": "DP on the members",
    "none": "read the members without DP",
    "post-processing": "post-processing",
    "audit": "audit",
    "unknown": "see ledger.json",
}


def _steps_section(facts: CardFacts) -> list[str]:
    chain = " → ".join(s.stage for s in facts.steps if s.privacy != "audit")
    lines = ["## How this file was made", "", f"`{chain}`", ""]
    for i, step in enumerate(facts.steps, start=1):
        lines.append(f"{i}. `{step.stage}` ({PRIVACY_WORDS[step.privacy]}): {step.description}")
    return lines


def _defaults_line(facts: CardFacts) -> str:
    base = (
        "Hyper-parameters: the shipped defaults were chosen on mnist5k seed 0's non-members and "
        "population (records that are not that run's members)"
    )
    if facts.dataset != "mnist5k":
        base += f"; this run's data set is `{facts.dataset}`, so they were not chosen on it"
    elif facts.seed is None:
        base += "; this run's seed stays off the card (reproducible noise)"
    elif facts.seed == 0:
        base += "; this run is seed 0, so they were chosen off its members"
    else:
        base += (
            f"; this run is seed {facts.seed}, under which some of those records are members: "
            "that choice is outside ε"
        )
    base += ". Settings chosen by looking at earlier runs on the same members are outside ε"
    if facts.searched:
        base += f"; the private search of {', '.join(facts.searched)} is inside it"
    return base + "."


def _covers_section(facts: CardFacts) -> list[str]:
    dp = [s.stage for s in facts.steps if s.privacy == "dp"]
    post = [s.stage for s in facts.steps if s.privacy == "post-processing"]
    none = [s.stage for s in facts.steps if s.privacy == "none"]
    lines = ["## What ε covers, and what it does not", ""]
    if facts.private:
        holder = (
            "who has the code, config.toml and the seed"
            if facts.noise != REPRODUCIBLE
            else "who has the code but neither config.toml nor the seed (reproducible noise: "
            "ε does not hold against anyone who has them)"
        )
        lines += [
            "Covered:",
            "",
            f"- The files in this folder, their ONNX metadata and this card, against an "
            f"adversary {holder}.",
            f"- Spent ε on the members: {', '.join(dp)}.",
        ]
        if post:
            lines.append(
                f"- Post-processing (no private data read; the guarantee carries over): "
                f"{', '.join(post)}."
            )
    else:
        lines += [
            "Covered: nothing. ε is infinite: "
            + (f"{', '.join(none)} read the members without DP." if none else "not private."),
        ]
        if dp:
            lines.append(f"(DP mechanisms that ran on the members: {', '.join(dp)}.)")
    lines += [
        "",
        "Not covered:",
        "",
        "- The data owner's files in the run directory, which do not ship: splits.json (which "
        "records are members), the reference models, every attack result (metrics.json, "
        "summary.json, report.html, report.md), audit.json and releases.json.",
        f"- The data set size is public: {facts.splits.get('members', 0):,} members (the "
        "accounting reads it).",
        "- The public and test splits are not protected (their uses are listed above).",
        f"- {_defaults_line(facts)}",
        (
            "- Seeds: run.seed is in config.toml; it fixes the split, initial weights, "
            "references, attacks and here also the noise, so it is left out of this card."
            if facts.seed is None
            else f"- Seeds: run.seed = {facts.seed} is public; it fixes the split, initial "
            "weights, references and attacks, never the noise."
        ),
        "- Each artifact's ε is its own lineage's; shipping artifacts of this run that come "
        "from different releases is covered by the run's total (ledger.json `total`) instead.",
        "- Record level, not person level: someone who contributed k records is protected as a "
        "group of k (roughly kε).",
        "- Side channels: wall-clock time, file timestamps, and floating-point attacks on "
        "Gaussian sampling are out of scope.",
    ]
    if facts.defense is not None:
        lines.append(f"- The `{facts.defense}` defense: it is not DP and carries no ε.")
    return lines


def _audit_section(facts: CardFacts) -> list[str]:
    lines = ["## Membership-inference audit", ""]
    where = ", ".join(REPORT_FILES)
    if facts.attacks:
        names = ", ".join(f"`{a}`" for a in facts.attacks)
        lines.append(
            f"The data owner's audit runs these attacks on `{facts.attacked_file}`: {names}."
        )
    else:
        lines.append(
            f"No attack is configured for `{facts.attacked_file}` in this run (by run.evaluate "
            "or an evaluate stage after it)."
        )
    lines.append(
        f"Attack results are statistics of the members that ε does not cover: they stay in the "
        f"run directory ({where}), which does not ship, and are not in this card"
        + (" except as below, on request." if facts.attack_metadata else ".")
    )
    return lines


def _attack_section(facts: CardFacts) -> list[str]:
    lines = [
        f"## Attack results: {ATTACK_METADATA_NOTE}",  # the label the ONNX metadata carries
        "",
        "Shown because export.attack_metadata = true; the ONNX files carry the same values "
        "(privcomp.attack.*).",
        "",
        "| file | strongest attack | TPR at its FPR [corrected 95%] | beats chance | measured on |",
        "|---|---|---|---|---|",
    ]
    for f in facts.files:
        a = f.attack or {}
        if a.get("attack") is None:
            lines.append(f"| `{f.name}` | – | – | – | nothing measured before this stage |")
            continue
        low, high = a["tpr_interval"]
        tpr = f"{a['tpr']:.4f} at {a['fpr']:.0%} [{low:.4f}, {high:.4f}]"
        chance = "yes" if a["beats_chance"] else "no (within chance)"
        lines.append(f"| `{f.name}` | {a['attack']} | {tpr} | {chance} | {a['measured_on']} |")
    return lines


def privacy_card_markdown(facts: CardFacts) -> str:
    """The card, as markdown: a pure function of the facts."""
    names = ", ".join(f"`{f.name}`" for f in facts.files)
    lines = [
        f"# Privacy card: {names}",
        "",
        f"privcomp {facts.version} · {facts.date} (UTC) · folder `{facts.stage_dir}` · "
        f"{_guarantee_line(facts)}",
        "",
    ]
    for warning in _warnings(facts):
        lines += [f"> {warning}", ""]
    for section in (
        _model_section,
        _guarantee_section,
        _data_section,
        _steps_section,
        _covers_section,
        _audit_section,
    ):
        lines += [*section(facts), ""]
    if facts.attack_metadata:
        lines += [*_attack_section(facts), ""]
    return "\n".join(lines).rstrip() + "\n"
