"""Build time: ``MODEL_CARD.md``, the bundle's one page for the people who deploy it.

Why: a bundle's heads are trained on data with licences (CrisisMMD is CC BY-NC-SA 4.0: a
commercial deployer must be told), and the figure that matters is how labels hold on events the
model never saw. The card is rendered from the manifest alone, so it never disagrees with it:
data and licences, intended use, the CrisisMMD benchmark figures with intervals, the cross-event
summary once ``models crossval --record`` has written one, known failure modes, and the command
that rebuilds the bundle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from stream.build.event_finetune import ACROSS_EVENTS
from stream.errors import ConfigError
from stream.models.manifest import sha256_file

__all__ = ["CARD", "crossval_summary", "record_crossval", "render_card"]

CARD = "MODEL_CARD.md"

_MEANS = ("mean_over_events", "baseline_tfidf", "zero_shot", "fp32_encoder")
_FAILURE_MODES = """\
- Labels are learned from 2010-2018 disasters (earthquakes, floods, hurricanes, a typhoon,
  wildfires, explosions, crashes, a bombing): a new kind of hazard or a new platform's style is
  out of distribution. Check the cross-event spread above, not only the mean.
- Languages: the encoder reads ~100 languages, but labelled training text is mostly English,
  Spanish, Italian, Portuguese, French and Tagalog; other languages get the encoder's transfer
  only (see the per-language figures).
- `not_humanitarian` / `other_relevant_information` and `affected_individuals` are the classes
  annotators disagree on most; expect them to be the least reliable.
- {rationales}
- Image labels (when the bundle has an image side) come through ImageNet concepts fitted on one
  event; treat the image's weight as a prior."""


_RATIONALES_MEAN = (
    "Rationales show what this linear model relied on, including function words and place "
    "names;\n  they explain the model, not the event."
)
_RATIONALES_CONTENT = (  # content pooling: function words only as halves of bigrams
    "Rationales show what this linear model relied on: content words and place names (a\n  "
    "function word only as half of a bigram such as 'flood in'); they explain the model, not "
    "the event."
)


def crossval_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a ``models crossval`` report: protocol and per-task means,
    baselines and languages (the per-event rows stay in the report file)."""
    tasks = {}
    for task, t in report["tasks"].items():
        tasks[task] = {
            **{k: v for k, v in t.items() if k.startswith(_MEANS)},
            "by_language": t["by_language"],
            "per_event_macro_f1": {g: row["macro_f1"] for g, row in t["groups"].items()},
        }
    return {"protocol": report["protocol"], "messages": report["messages"], "tasks": tasks}


def _interval(m: dict[str, Any] | None, key: str = "macro_f1") -> str:
    if not m:
        return "-"
    iv = m.get("intervals", {}).get(key) or m.get(f"{key}_interval")
    return f"{m[key]:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")


def _data_lines(data: Any) -> list[str]:
    if isinstance(data, dict) and "sources" in data:
        lines = [
            f"- {name}: {info['kept']} messages, {info['events']} events; licence {info['licence']}"
            for name, info in data["sources"].items()
        ]
        lines.append(f"- held out: {data['held_out']}")
        return lines
    return [f"- {data}" if data else "- no labelled data: zero-shot heads from label descriptions"]


def _crossval_lines(cv: dict[str, Any] | None, tuned: bool) -> list[str]:
    if not cv:
        flag = " --finetune" if tuned else ""
        return [
            f"Not measured yet: run `crisis-stream models crossval --bundle <this bundle>{flag} "
            "--record`."
        ]
    lines = [
        f"Protocol: {cv['protocol']}.",
        "",
        "| task | macro-F1, mean over events [95 %] | worst event | ECE | TF-IDF baseline "
        "| zero-shot | fp32 encoder |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, t in cv["tasks"].items():
        for suffix, what in (("_without_dev_events", " (dev events out)"), ("", " (all)")):
            m = t.get(f"mean_over_events{suffix}")
            if not m:
                continue
            lines.append(
                f"| {task}{what} | {_interval(m)} | {m['worst_event']['event']} "
                f"{m['worst_event']['macro_f1']:.3f} | {m['ece']:.3f} "
                f"| {_interval(t.get('baseline_tfidf' + suffix))} "
                f"| {_interval(t.get('zero_shot' + suffix))} "
                f"| {_interval(t.get('fp32_encoder' + suffix))} |"
            )
    lines += [
        "",
        "Dev events: the five whose folds chose the recipe; the mean without them is the "
        "unbiased figure.",
        "",
        "Per language (held-out events pooled; a language's messages often come from one or two "
        "events, and the interval is over messages, so it understates the spread), macro-F1:",
        "",
    ]
    for task, t in cv["tasks"].items():
        langs = ", ".join(f"{k} {_interval(v)} (n {v['n']})" for k, v in t["by_language"].items())
        lines.append(f"- {task}: {langs}")
    return lines


def render_card(manifest: dict[str, Any]) -> str:
    """The model card of a bundle, from its manifest."""
    built = manifest.get("built_from", {})
    tuning = manifest["text_encoder"].get("fine_tuning")
    layers = manifest["text_encoder"].get("layers")
    tuned_line = (
        f"- fine-tuned: {tuning.get('recipe', 'on the CrisisMMD train split')} "
        f"({tuning.get('train_texts', '?')} texts, {tuning.get('seconds', '?')} s)"
        if tuning
        else "- frozen: the package weights as published"
    ) + (f"; only the encoder's first {layers} layers run" if layers else "")
    lines = [
        f"# {manifest['name']} {manifest['version']}",
        "",
        "Labels crisis social-media messages (tweet text, optional image) for humanitarian "
        "triage: `informative` (informative / not_informative) and `humanitarian` (5 classes).",
        "",
        "## Intended use",
        "",
        "Triage of public messages during a disaster, with a person reviewing what the model "
        "flags (`needs_review`) and what drives decisions. Not for decisions about individuals.",
        "",
        "## Encoder",
        "",
        f"- {built.get('text', '?')}; precision {manifest['text_encoder'].get('precision')}; "
        f"pooling {manifest['text_encoder'].get('pooling', 'mean')}",
        tuned_line,
        "",
        "## Training data and licences",
        "",
        *_data_lines(built.get("data")),
        "",
        "CrisisMMD is CC BY-NC-SA 4.0: heads trained on it inherit its non-commercial terms.",
        "",
        "## Events it never saw (cross-event evaluation)",
        "",
        *_crossval_lines(manifest.get("crossval"), bool(tuning)),
        "",
        "## CrisisMMD agreed test split (comparable with published results)",
        "",
        "| task | accuracy [95 %] | macro-F1 [95 %] | ECE |",
        "|---|---|---|---|",
    ]
    for head in manifest.get("heads", []):
        test = head.get("metrics", {}).get("test")
        if test:
            lines.append(
                f"| {head['task']} | {_interval(test, 'accuracy')} | {_interval(test)} "
                f"| {test.get('ece', float('nan')):.3f} |"
            )
    lines += [
        "",
        "## Known failure modes",
        "",
        _FAILURE_MODES.format(
            rationales=_RATIONALES_CONTENT
            if manifest["text_encoder"].get("pooling") == "mean_content"
            else _RATIONALES_MEAN
        ),
        "",
        "## Rebuild",
        "",
        f"`{manifest.get('build_command', '')}`",
        "",
    ]
    return "\n".join(lines)


def record_crossval(bundle: Path, report: dict[str, Any]) -> None:
    """Write ``report``'s summary into ``bundle``'s manifest and re-render its model card
    (the card's sha256 in the manifest follows). The manifest is replaced atomically."""
    path = bundle / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    recipes = {
        h.get("metrics", {}).get("selection", {}).get("event_weight") for h in manifest["heads"]
    }
    if None in recipes:
        raise ConfigError(
            f"{bundle}'s heads were not fitted with the cross-event recipe (--heads corpus): the "
            "report would not describe them"
        )
    tuning = manifest.get("text_encoder", {}).get("fine_tuning")
    across = bool(tuning) and str(tuning.get("recipe", "")).startswith(ACROSS_EVENTS)
    if bool(tuning) != bool(report.get("fold_encoders")) or (tuning and not across):
        raise ConfigError(
            f"{bundle}'s encoder is "
            + (
                "fine-tuned across events"
                if across
                else "fine-tuned on CrisisMMD"
                if tuning
                else "frozen"
            )
            + " but the report's folds "
            + (
                "fine-tuned theirs across events"
                if report.get("fold_encoders")
                else "shared one frozen encoder"
            )
            + ": it would not describe the bundle's recipe"
        )
    manifest["crossval"] = crossval_summary(report)
    card = bundle / f".{CARD}.tmp"
    card.write_text(render_card(manifest), encoding="utf-8")
    manifest.setdefault("files", {})[CARD] = sha256_file(card)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    os.replace(card, bundle / CARD)  # the card, then at once the manifest that hashes it
    os.replace(tmp, path)
