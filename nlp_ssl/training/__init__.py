"""The rooms of the trainer (:class:`nlp_ssl.trainer.Trainer` holds the loop and calls them):

- ``config``: ``TrainConfig`` (every recipe's top-level keys) and ``TrainerState`` (saved with checkpoints);
- ``setup``: the accelerator, the machine, the lock on ``output_dir``, the batch arithmetic and the
  resume point, resolved once by ``make_accelerator``;
- ``loaders``: the DataLoaders, the micro-batches epoch after epoch, a stream's saved position;
- ``optimization``: the optimizer and the learning-rate schedule;
- ``compiling``: ``compile=true`` on a fixed batch, with deterministic kernels;
- ``guard``: stop signals, non-finite steps and weights, ``run_status.json``;
- ``throughput``: tokens/s and MFU, the hardware peak;
- ``evaluation``: the validation loss and metrics, the best model, early stopping;
- ``saving``: checkpoints, plain Hugging Face model folders, the final outputs.
"""
