"""Triton Python-backend model: the jets tagger, run by onnxruntime inside the backend stub.

Every input the config names is read from each request; with dynamic batching, the requests Triton
hands `execute` together are stacked and run as one batch, then split back."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value") or "1"
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(Path(__file__).with_name("model.onnx")), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        feeds = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                 for name in self.inputs}
        sizes = [len(a) for a in feeds[self.inputs[0]]]
        batch = {name: np.concatenate(arrays).astype(np.float32, copy=False) for name, arrays in feeds.items()}
        out = self.session.run([self.output], batch)[0]
        responses, start = [], 0
        for n in sizes:
            tensor = pb_utils.Tensor(self.output, out[start:start + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += n
        return responses
