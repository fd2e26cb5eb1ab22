"""What a finished run leaves beside its model: loss curves as a PNG and a model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nlp_ssl import atomic


@dataclass
class RunDescription:
    """What the model card says about a run; recipes fill it in."""

    objective: str = ""
    data: str = ""
    base_model: str = "trained from scratch"
    pipeline_tag: str | None = None
    notes: list[str] = field(default_factory=list)
    license: str | None = None
    #: Hub ids of the training data (card metadata ``datasets``), where the data has one.
    datasets: list[str] = field(default_factory=list)
    #: Hub id of the starting checkpoint (metadata ``base_model``); None for a local folder or scratch.
    base_model_id: str | None = None
    #: Results to list in ``model-index``: result key -> metric type (e.g. ``test_accuracy`` -> ``accuracy``).
    eval_metrics: dict[str, str] = field(default_factory=dict)
    #: The scored dataset as ``model-index`` names it: ``name``, and ``type``/``config``/``split`` if known.
    eval_dataset: dict[str, str] = field(default_factory=dict)


#: What the Hub calls each pipeline's task in ``model-index``.
TASK_NAMES = {"text-classification": "Text Classification", "image-classification": "Image Classification",
              "fill-mask": "Fill-Mask", "text-generation": "Text Generation"}


def card_metadata(description: RunDescription, results: dict, name: str) -> dict:
    """The card's YAML front matter: license, datasets, base model and ``model-index`` eval results.

    ``model-index`` is what makes the Hub show the scores beside the model; only results that the
    run actually reports (finite numbers) are listed.
    """
    meta: dict = {"library_name": "transformers", "tags": ["nlp_ssl", "self-supervised"]}
    if description.pipeline_tag:
        meta["pipeline_tag"] = description.pipeline_tag
    if description.license:
        meta["license"] = description.license
    if description.datasets:
        meta["datasets"] = list(description.datasets)
    if description.base_model_id:
        meta["base_model"] = description.base_model_id
    metrics = [
        {"type": metric, "value": float(results[key]), "name": key}
        for key, metric in description.eval_metrics.items()
        if isinstance(results.get(key), (int, float)) and results[key] == results[key]
    ]
    if metrics:
        task = description.pipeline_tag or "other"
        dataset = dict(description.eval_dataset) or {"name": description.data or "evaluation data", "type": "local"}
        dataset.setdefault("type", "local")
        meta["model-index"] = [{"name": name, "results": [{
            "task": {"type": task, "name": TASK_NAMES.get(task, task)},
            "dataset": dataset,
            "metrics": metrics,
        }]}]
    return meta


def plot_loss_curves(history: list[dict], path: Path, title: str = "") -> Path | None:
    """Training and validation loss against optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    valid = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train and not valid:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    if train:
        ax.plot(*zip(*train), label="training loss", linewidth=1.2)
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation loss", linewidth=1.6, markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_model_card(
    output_dir: Path, description: RunDescription, results: dict, config: dict, plot_name: str | None,
    repo_id: str | None = None,
) -> Path:
    """``README.md`` with YAML front matter, so the Hub renders it; states data, objective, steps, metrics.

    ``repo_id`` (where the model is pushed) names the model in the card; else the folder does, and
    the load snippet names it by its absolute path, which works from wherever the reader stands.
    """
    name = repo_id or Path(output_dir).name
    location = repo_id or str(Path(output_dir).resolve())
    meta = card_metadata(description, results, name)
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {name}",
        "",
        f"Trained with nlp_ssl (self-supervised pretraining and fine-tuning on the Hugging Face stack) — "
        f"objective: **{description.objective}**.",
        "",
        f"- **Data:** {description.data}",
        f"- **Base model:** {description.base_model}",
        f"- **Optimizer steps:** {results.get('steps', '?')}",
        f"- **Tokens seen:** {results.get('train_tokens', '?')}",
        *[f"- {note}" for note in description.notes],
        "",
        "## Results",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in results.items()],
        "",
    ]
    if plot_name:
        lines += ["## Loss curves", "", f"![loss curves]({plot_name})", ""]
    lines += [
        "## Training config",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
        "",
        "## How to load",
        "",
        "```python",
        *_load_lines(description.pipeline_tag, location),
        "```",
        "",
    ]
    path = Path(output_dir) / "README.md"
    atomic.write_text(path, "\n".join(lines))
    return path


def _load_lines(pipeline_tag: str | None, name: str) -> list[str]:
    if pipeline_tag:
        return ["from transformers import pipeline", f'model = pipeline("{pipeline_tag}", model="{name}")']
    return ["from transformers import AutoModel", f'model = AutoModel.from_pretrained("{name}")']


def run_summary(results: dict, output_dir: str | Path, keys=()) -> str:
    """What a finished run says last: how far it trained, the ``keys`` of its results that it has, and
    where the model, its card, the loss plot and all the results are."""
    out = Path(output_dir)
    numbers = ", ".join(f"{k} {_number(results[k])}" for k in keys if k != "steps" and results.get(k) is not None)
    stopped = f" (stopped early: {results['stop_reason']})" if results.get("stopped_early") else ""
    took = f" in {results['train_runtime_s']:.0f} s" if isinstance(results.get("train_runtime_s"), (int, float)) else ""
    lines = [f"finished {results.get('steps', '?')} steps{took}{stopped}" + (f": {numbers}" if numbers else ""),
             f"  model:       {out}/ (a plain Hugging Face folder; its README.md is the model card)"]
    if (out / "loss_curves.png").is_file():
        lines.append(f"  loss plot:   {out / 'loss_curves.png'}")
    if (out / "best_model").is_dir():
        lines.append(f"  best model:  {out / 'best_model'}/")
    lines.append(f"  all results: {out / 'all_results.json'}")
    return "\n".join(lines)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
