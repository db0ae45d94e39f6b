"""The serving runtime behind the API, one module per concern:

metrics        the Prometheus metrics (ServingMetrics) and the multi-worker folder
predictor      predictions: the fast path for our pipelines (FastPredictor, checked against
               scikit-learn by check_fast_path) and the generic scikit-learn one
holder         the version being served: LoadedModel (ready to serve) and ModelHolder (the
               champion alias, polled and hot-swapped)
inference_log  the rows a prediction request logs (log_predictions) and their buffered writer
               (InferenceLogger)

Dependencies go one way: holder uses predictor and reports to metrics; inference_log reports to
metrics; nothing here imports the API.
"""

from .holder import LoadedModel, ModelHolder
from .inference_log import InferenceLogger, log_predictions, new_request_id
from .metrics import ServedModel, ServingMetrics, forget_dead_workers, multiproc_dir, prepare_multiproc_dir
from .predictor import PROBES, FastPredictor, Predictions, check_fast_path, generic_predict

__all__ = [
    "PROBES", "FastPredictor", "InferenceLogger", "LoadedModel", "ModelHolder", "Predictions",
    "ServedModel", "ServingMetrics", "check_fast_path", "forget_dead_workers", "generic_predict",
    "log_predictions", "multiproc_dir", "new_request_id", "prepare_multiproc_dir",
]
