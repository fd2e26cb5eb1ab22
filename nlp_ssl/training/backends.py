"""What each distributed backend (DDP, FSDP, DeepSpeed, all through accelerate) needs from the trainer.

The trainer accumulates by hand: each micro-batch's loss is already divided by the items of the whole
optimizer step (all micro-batches, all processes), gradients add up over micro-batches and are
averaged over processes. DDP and FSDP then only need the gradient sync held back until the last
micro-batch (``no_sync``). DeepSpeed owns accumulation instead: its engine divides every loss by its
``gradient_accumulation_steps`` and syncs, clips and steps by itself at the boundary the trainer
marks. So DeepSpeed gets the run's batch sizes and clipping in its config, and each loss multiplied
back by the accumulation, which gives it the same gradient as the other backends.
"""

from __future__ import annotations

import contextlib
import logging
import os

from accelerate.utils import DistributedType

from nlp_ssl.errors import ConfigError

logger = logging.getLogger("nlp_ssl.training.backends")

#: The launcher's switch for each sharding backend (``accelerate launch`` sets it from the config file).
REQUESTED = {"ACCELERATE_USE_FSDP": DistributedType.FSDP, "ACCELERATE_USE_DEEPSPEED": DistributedType.DEEPSPEED}


def configure(accelerator, micro_batch_size: int, accumulation: int, max_grad_norm: float) -> None:
    """Check the backend that accelerate chose against the one launched, and fill DeepSpeed's config."""
    warn_if_replaced(accelerator)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        fill_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, micro_batch_size, accumulation,
                              accelerator.num_processes, max_grad_norm)


def warn_if_replaced(accelerator) -> None:
    """accelerate 1.15 turns FSDP on only for GPU-type processes: on CPU an FSDP config runs plain DDP
    (the same training, nothing sharded). Say so rather than let the user believe it sharded."""
    for switch, wanted in REQUESTED.items():
        if os.environ.get(switch, "false").lower() == "true" and accelerator.distributed_type != wanted:
            if accelerator.is_local_main_process:
                logger.warning("%s was launched (%s=true), but accelerate runs it only on GPUs: these %d process(es) "
                               "train with %s instead (the same updates, nothing sharded)", wanted.value, switch,
                               accelerator.num_processes, accelerator.distributed_type.value)


def fill_deepspeed_config(ds_config: dict, micro_batch_size: int, accumulation: int, num_processes: int,
                          max_grad_norm: float) -> None:
    """Put the run's batch sizes and clipping where DeepSpeed's config says ``auto`` (or nothing);
    a number that disagrees with the run is one line naming both."""
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch_size * accumulation * num_processes,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in wanted.items():
        given = ds_config.get(key, "auto")
        if given == "auto":
            ds_config[key] = value
        elif float(given) != float(value):
            raise ConfigError(f"DeepSpeed config {key}={given} disagrees with this run's {value} (from global_batch_size, "
                              f"micro_batch_size, the {num_processes} process(es) and max_grad_norm); set it to auto")


def micro_step(accelerator, model, last: bool):
    """The context of one micro-batch's forward and backward. DDP/FSDP: hold back the gradient sync
    until the last one. DeepSpeed: mark whether this is the accumulation boundary, where the engine
    syncs, clips, steps and zeroes the gradients inside ``accelerator.backward``."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.sync_gradients = last
        return contextlib.nullcontext()
    return contextlib.nullcontext() if last else accelerator.no_sync(model)


def loss_factor(accelerator, accumulation: int) -> int:
    """What a micro-batch's (already step-normalised) loss is multiplied by before ``backward``:
    DeepSpeed divides it by ``gradient_accumulation_steps``, so it gets that back; others get 1."""
    return accumulation if accelerator.distributed_type == DistributedType.DEEPSPEED else 1


def full(value):
    """A plain tensor of a value that FSDP2 may hand back as a DTensor (e.g. the clipped gradient norm)."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def local(tensor):
    """This process's shard of a parameter under FSDP2 (a DTensor); the tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
