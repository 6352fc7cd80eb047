"""``DatasetRecord``: the MLflow run records the dataset it trained or was evaluated on.

At setup, a datamodule with ``dataset_identity()`` (the corpus modules and ``TextBlocksDataModule``)
is logged as an MLflow dataset input: its name, path and content digest (a corpus build's
fingerprint), with the context ``training`` for fit and ``evaluation`` otherwise, so the run page's
"Datasets" shows what was read and two runs on the same data show the same digest. ``LitBlockCLI``
adds this callback to every trainer; without an MLflow logger it does nothing.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger


class DatasetRecord(L.Callback):
    def setup(self, trainer, pl_module, stage: str) -> None:
        identity = getattr(trainer.datamodule, "dataset_identity", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
        if identity is None or not loggers or not trainer.is_global_zero:
            return
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        found = identity()
        dataset = Dataset(name=found.name, digest=found.digest, source_type="local",
                          source=json.dumps({"uri": found.source}))  # MLflow's own record of a local path
        context = InputTag("mlflow.data.context", "training" if stage == "fit" else "evaluation")
        for logger in loggers:
            record(logger.experiment, logger.run_id, DatasetInput(dataset, [context]))


def record(client, run_id: str, dataset_input) -> None:
    """Log one dataset input; a record is worth no failed run. Runs started together (a parallel sweep's points)
    race on MLflow's get-or-create of the same dataset row: the loser's insert fails once, and a second try
    finds the row."""
    import time
    import warnings

    from mlflow.exceptions import MlflowException

    for attempt in range(3):
        try:
            client.log_inputs(run_id, datasets=[dataset_input])
            return
        except MlflowException as err:
            if attempt == 2:
                warnings.warn(f"the dataset was not recorded on MLflow run {run_id}: {err}", stacklevel=2)
            time.sleep(0.2 * (attempt + 1))
