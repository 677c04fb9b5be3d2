"""A signed bundle whose model.onnx breaks the bundle contract (issue 13 item 11): input 32x32 while the manifest
says otherwise, an output named `defect_score` instead of `score`, no `class_logits`. The station answers
`model_update_rejected` with the reason and keeps serving the old model. Real broker, real ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support.daemon import Collector, file_camera, reference_frames, write_station, write_video
from support.daemon import start_daemon as start_station

from onen.edge.bundle import load_bundle
from onen.edge.config import load_config
from onen.edge.local_broker import MosquittoBroker
from onen.edge.publisher import Topics
from onen.edge.station_client import send_command
from onen.edge.updates import generate_keys, install_message, load_private_key, sign_bundle


def contract_breaking_model(path, height: int, width: int) -> None:
    """A real ONNX graph: uint8 NHWC image -> mean as `defect_score`, plus an `anomaly_map`; no class_logits."""
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, [1, height, width, 3])
    score = helper.make_tensor_value_info("defect_score", TensorProto.FLOAT, [1])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, height, width])
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        helper.make_node("Reshape", ["m", "one"], ["defect_score"]),
        helper.make_node("ReduceMean", ["f", "axis"], ["anomaly_map"], keepdims=0),
    ]
    inits = [
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis", TensorProto.INT64, [1], [3]),
    ]
    graph = helper.make_graph(nodes, "broken", [image], [score, amap], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture
def broker():
    with MosquittoBroker() as running:
        yield running


def test_signed_bundle_breaking_the_contract_is_refused_with_the_reason(tmp_path, broker, tiny_bundle):
    keys = generate_keys(tmp_path / "keys", "release")
    manifest_of_tiny = load_bundle(tiny_bundle).manifest
    assert (manifest_of_tiny.input_height, manifest_of_tiny.input_width) != (32, 32), (
        "the test needs another input size"
    )
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    shutil.rmtree(broken / "engines", ignore_errors=True)
    (broken / "signature").unlink(missing_ok=True)
    contract_breaking_model(broken / "model.onnx", 32, 32)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = hashlib.sha256((broken / "model.onnx").read_bytes()).hexdigest()
    manifest["version"] = "broken-1"
    (broken / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(broken, load_private_key(keys[0]))

    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=8)
    config = write_station(
        tmp_path,
        broker.port,
        tiny_bundle,
        [file_camera("cam", video, realtime=True, loop=True)],
        updates={"dir": str(tmp_path / "models"), "trusted_keys": [str(keys[1])]},
    )
    station_config = load_config(config)
    collector = Collector(broker.host, broker.port)
    daemon, thread = start_station(config, wait_connected_s=10)
    try:
        assert collector.wait(lambda c: len(c.results()) >= 3, timeout=20)
        payload, request_id = install_message(model="m", path=str(broken))
        answer = send_command(
            station_config,
            Topics("onen", station_config.station).model_install,
            payload,
            lambda e: (e.get("detail") or {}).get("request_id") == request_id,
            30,
        )
        assert answer is not None, "no answer to a contract-breaking bundle"
        assert answer["kind"] == "model_update_rejected", answer
        reason = answer["detail"]["reason"]
        assert (
            "breaks the bundle contract" in reason and "32" in reason and "score" in reason and "class_logits" in reason
        ), reason
        assert daemon.model_infos["m"].sha256 == load_bundle(tiny_bundle).onnx_sha256
        count = len(collector.results())
        assert collector.wait(lambda c: len(c.results()) >= count + 3, timeout=20), "the old model keeps serving"
        assert np.isfinite([r["score"] for r in collector.results()[-3:]]).all()
    finally:
        daemon.request_stop()
        thread.join(30)
        collector.close()
