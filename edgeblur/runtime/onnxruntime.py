"""ONNX Runtime: CPU today, CUDA / TensorRT execution providers where the wheel has them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeblur.errors import ConfigError, ModelMissing
from edgeblur.runtime.base import RuntimeSettings

log = logging.getLogger(__name__)


class OnnxRuntime:
    """One inference session for one network file; not thread-safe by design (one owner)."""

    def __init__(self, path: Path, settings: RuntimeSettings = RuntimeSettings()):
        if not Path(path).is_file():
            raise ModelMissing(
                f"Model file {path} does not exist; check the path or run `edgeblur models pull`."
            )
        available = ort.get_available_providers()
        providers = [p for p in settings.providers if p in available]
        missing = [p for p in settings.providers if p not in available]
        if not providers:
            raise ConfigError(
                f"None of the execution providers {list(settings.providers)} is available in this "
                f"onnxruntime (it has {available}); choose one of those in runtime.providers."
            )
        if missing:
            # Never fall back silently: a GPU box running on CPU must say so.
            log.warning("execution providers %s are not available; using %s", missing, providers)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if settings.threads:
            opts.intra_op_num_threads = settings.threads
        opts.inter_op_num_threads = 1
        # allow_spinning=0: spinning workers burn the core that decode/encode need.
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
        )
        for key, value in settings.options.items():
            opts.add_session_config_entry(key, value)
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelMissing(
                f"Model file {path} cannot be loaded by ONNX Runtime ({type(exc).__name__}); "
                "pull it again with `edgeblur models pull --force` or check the file."
            ) from exc
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = self.session.get_inputs()[0].shape
        self.batch_dynamic = not isinstance(first[0], int)

    def describe(self) -> tuple[str, str]:
        # Only the first provider is named: ONNX Runtime puts on it every node it can run.
        # Lower case, as metric label values and alerts match them (onnxruntime-cpu, -cuda).
        provider = self.providers[0].removesuffix("ExecutionProvider").lower()
        return f"onnxruntime-{provider}", "fp32"

    def input_shape(self, name: str) -> tuple[int | str | None, ...]:
        for i in self.session.get_inputs():
            if i.name == name:
                return tuple(i.shape)
        raise KeyError(name)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.batch_dynamic:
            return self.session.run(None, inputs)
        # A network exported at batch 1 runs image by image; outputs are stacked back.
        n = len(next(iter(inputs.values())))
        parts = [
            self.session.run(None, {k: v[i : i + 1] for k, v in inputs.items()}) for i in range(n)
        ]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]
