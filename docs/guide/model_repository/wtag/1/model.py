"""Triton Python backend: the jet tagger's ONNX file, run with onnxruntime inside the server."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        """Once, when Triton loads the model: open model.onnx beside this file."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # Triton runs several requests at once; keep each small
        path = Path(__file__).with_name("model.onnx")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        """For every batch Triton forms: one response per request, in order."""
        responses = []
        for request in requests:
            jets = pb_utils.get_input_tensor_by_name(request, "FEATURES").as_numpy()
            (probs,) = self.session.run(["PROBABILITIES"], {"FEATURES": jets.astype(np.float32)})
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("PROBABILITIES", probs)]))
        return responses
