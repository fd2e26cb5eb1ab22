"""Evaluation on the validation set, the best model by ``metric_for_best``, and early stopping."""

from __future__ import annotations

import logging
import math

import torch

from nlp_ssl.errors import ConfigError
from nlp_ssl.training.compiling import first_examples

logger = logging.getLogger("nlp_ssl.trainer")


@torch.no_grad()
def evaluate(accelerator, model, task, loader, eval_batches: int | None, step: int) -> dict:
    """Loss (token-level mean over the whole validation set), perplexity, and the task's metrics,
    summed over every process, logged to the trackers and the log."""
    acc = accelerator
    model.eval()
    sums: dict[str, list[torch.Tensor]] = {}
    for i, batch in enumerate(loader):
        if eval_batches is not None and i >= eval_batches:
            break
        out = model(**batch)
        for kind in ("losses", "metrics"):
            for name, (num, den) in out.get(kind, {}).items():
                key = f"{kind}/{name}"
                num, den = num.detach().float(), torch.as_tensor(den, device=acc.device).float()
                if key in sums:
                    sums[key][0] += num
                    sums[key][1] += den
                else:
                    sums[key] = [num.clone(), den.clone()]
    keys = sorted(sums)
    if not keys:
        raise ConfigError("the validation data gave no batch")
    packed = torch.stack([torch.stack(sums[k]) for k in keys])
    packed = acc.reduce(packed, "sum")
    values = {k: (packed[i, 0] / packed[i, 1].clamp(min=1)).item() for i, k in enumerate(keys)}
    weights = task.loss_weights
    result = {"eval_loss": sum(w * values[f"losses/{n}"] for n, w in weights.items())}
    if len(weights) > 1:
        result.update({f"eval_{n}_loss": values[f"losses/{n}"] for n in weights})
    if task.reports_perplexity:
        result["eval_perplexity"] = math.exp(min(result["eval_loss"], 50.0))
    result.update({f"eval_{k.split('/', 1)[1]}": v for k, v in values.items() if k.startswith("metrics/")})
    acc.log({f"eval/{k[5:]}": v for k, v in result.items()}, step=step)
    if acc.is_local_main_process:
        logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    return result


def check_metric_for_best(config, accelerator, model, task, dataset, collator) -> None:
    """Refuse an unknown ``metric_for_best`` before training, not at the first evaluation: the names
    a task reports are its losses' (known) and its metrics', read from one batch of validation data
    (eval mode, no gradients, the RNG untouched)."""
    metric_for_best, batch_size = config.eval.metric_for_best, config.eval.batch_size or config.impl.micro_batch_size
    name = metric_for_best.removeprefix("eval_")
    reported = {"loss"} | ({"perplexity"} if task.reports_perplexity else set())
    if len(task.loss_weights) > 1:
        reported |= {f"{n}_loss" for n in task.loss_weights}
    if name in reported:
        return
    batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v
             for k, v in collator(first_examples(dataset, batch_size)).items()}
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices, device_type=accelerator.device.type):
        model.eval()
        reported |= set(model(**batch).get("metrics", {}))
    if name not in reported:
        raise ConfigError(f"eval.metric_for_best {metric_for_best!r} is not reported; choose one of {sorted(reported)}")


def greater_is_better(config) -> bool:
    """``greater_is_better``, or by default: lower is better for loss and perplexity, higher for the rest."""
    if config.eval.greater_is_better is not None:
        return config.eval.greater_is_better
    return config.eval.metric_for_best not in ("loss", "perplexity")


def track_best(state, result: dict, metric_for_best: str, greater: bool, patience: int) -> tuple[bool, bool]:
    """Update the state's best metric from one evaluation: (it is the best so far, early stopping says stop)."""
    key = metric_for_best if metric_for_best.startswith("eval_") else f"eval_{metric_for_best}"
    if key not in result:
        raise ConfigError(f"eval.metric_for_best {metric_for_best!r} is not reported; "
                          f"choose one of {sorted(k[5:] for k in result)}")
    value = result[key]
    best = state.best_metric
    better = math.isfinite(value) and (best is None or (value > best if greater else value < best))
    if better:
        state.best_metric, state.best_step = value, state.step
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    return better, bool(patience) and state.evals_without_improvement >= patience


def warn_if_exploding(result: dict, history: list[dict], step: int) -> None:
    """A loss far above its best usually means the run is diverging: say so while it can be acted on.
    ``history`` holds the earlier evaluations (and this one last)."""
    loss = result.get("eval_loss")
    earlier = [h["eval_loss"] for h in history[:-1] if math.isfinite(h.get("eval_loss", math.nan))]
    if loss is None or not earlier:
        return
    best = min(earlier)
    if not math.isfinite(loss) or loss > best + max(1.0, 0.5 * abs(best)):
        logger.warning("step %d: eval_loss %.4g is far above its best (%.4g): the run may be exploding; "
                       "consider a lower learning_rate", step, loss, best)
