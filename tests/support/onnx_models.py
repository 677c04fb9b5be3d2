"""Tiny real ONNX graphs written with the onnx package (no torch): models whose outputs a test can compute by hand."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from onen.edge.bundle import Manifest, write_manifest

HEIGHT, WIDTH = 32, 40


def write_mean_bundle(directory: Path, height: int = HEIGHT, width: int = WIDTH) -> Path:
    """A real, tiny ONNX bundle following the contract: map = mean over RGB / 255, score = map mean."""
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", height, width, 3])
    outputs = [
        helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
        helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, height, width]),
        helper.make_tensor_value_info("class_logits", TensorProto.FLOAT, ["N", 2]),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["pixels", "full_scale"], ["unit"]),
        helper.make_node("ReduceMean", ["unit"], ["gray"], axes=[3], keepdims=1),
        helper.make_node("Transpose", ["gray"], ["anomaly_map"], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMean", ["anomaly_map"], ["score_kept"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["score_kept", "flat"], ["score"]),
        helper.make_node("Reshape", ["score_kept", "column"], ["score_column"]),
        helper.make_node("MatMul", ["score_column", "logit_weights"], ["class_logits"]),
    ]
    initializers = [
        helper.make_tensor("full_scale", TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("column", TensorProto.INT64, [2], [-1, 1]),
        helper.make_tensor("logit_weights", TensorProto.FLOAT, [1, 2], [-4.0, 4.0]),
    ]
    graph = helper.make_graph(nodes, "mean_model", [image], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    write_manifest(
        directory,
        Manifest(
            name="mean",
            version="1",
            family="test-mean",
            input_height=height,
            input_width=width,
            class_names=["good", "defect"],
        ),
    )
    return directory
