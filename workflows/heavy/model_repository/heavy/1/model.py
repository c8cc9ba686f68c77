"""Triton Python-backend model: the heavy jet tagger, run by onnxruntime inside the backend stub.

The CPU Triton of the nvidia-pytriton wheel has only the Python backend, so the ONNX model runs
here. With dynamic batching, Triton hands `execute` several requests at once: their rows are
stacked and run as one batch (the model's experts are memory-bound at small batches, so one big
batch is several times faster than many small ones), then split back per request.

Threads come from the config's `parameters` (see config.pbtxt): onnxruntime's default is one
thread per core, spinning while it waits, which on a small node steals the cores the clients and
the other instances need.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _param(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_param(config, "intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", _param(config, "allow_spinning", "0"))
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        self.session = ort.InferenceSession(str(Path(__file__).with_name("model.onnx")), options, providers=providers)
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "FEATURES").as_numpy() for r in requests]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        probs = self.session.run([self.output], {self.input: batch.astype(np.float32, copy=False)})[0]
        responses, start = [], 0
        for a in arrays:
            out = pb_utils.Tensor("PROBABILITIES", probs[start:start + len(a)])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += len(a)
        return responses
