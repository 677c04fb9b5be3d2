"""Engine cache keys, sidecars, selection (load vs rebuild), the build lock and INT8 calibration batching."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from onen.edge.engines.int8_calibration import calibration_batches, list_calibration_images, pad_batch
from onen.edge.engines.keys import (
    EngineSidecar,
    RuntimeTarget,
    TensorSpec,
    calibration_cache_path,
    engine_file_name,
    parse_engine_file_name,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from onen.edge.engines.lock import EngineLockTimeout, FileLock
from onen.edge.engines.selection import LOAD, REBUILD, EngineRecord, choose_engine, scan_engines
from onen.edge.errors import BundleError, DataError
from onen.edge.images import prepare_batch, read_image_rgb

ORIN = RuntimeTarget("8.7", "10.3.0", "Orin")
ONNX_SHA = "a" * 64


def make_sidecar(
    target: RuntimeTarget = ORIN,
    precision: str = "fp16",
    onnx_sha: str = ONNX_SHA,
    built_at: str = "2026-11-25T10:00:00+00:00",
    **extra,
) -> EngineSidecar:
    return EngineSidecar(
        tensorrt_version=target.tensorrt_version,
        compute_capability=target.compute_capability,
        gpu_name=target.gpu_name,
        precision=extra.pop("used", precision),
        requested_precision=precision,
        onnx_sha256=onnx_sha,
        engine_file=engine_file_name(target, precision),
        inputs=[TensorSpec("image", [-1, 64, 64, 3], "uint8")],
        outputs=[TensorSpec("score", [-1], "float32")],
        built_at=built_at,
        **extra,
    )


def record(sidecar: EngineSidecar, problem: str = "") -> EngineRecord:
    return EngineRecord(Path("engines") / sidecar.engine_file, sidecar, problem)


# --- keys -------------------------------------------------------------------------------------------


def test_engine_file_name_round_trips():
    name = engine_file_name(ORIN, "fp16")
    assert name == "8.7_trt10.3.0_fp16.engine"
    target, precision = parse_engine_file_name(name)
    assert (target.compute_capability, target.tensorrt_version, precision) == ("8.7", "10.3.0", "fp16")
    assert parse_engine_file_name("model.engine") is None
    assert engine_file_name(RuntimeTarget("8.9", "10.7.0.post1"), "int8") == "8.9_trt10.7.0.post1_int8.engine"
    with pytest.raises(ValueError, match="bf16"):
        engine_file_name(ORIN, "bf16")
    with pytest.raises(ValueError, match="compute capability"):
        engine_file_name(RuntimeTarget("sm87", "10.3"), "fp16")


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / engine_file_name(ORIN, "fp16")
    original = make_sidecar(
        used="fp32",
        build_seconds=93.5,
        build_options={"max_batch": 4, "workspace_gb": 2.0},
        notes=["platform has no fast FP16: built FP32"],
        parity={"passed": True, "max_score_diff": 0.001},
    )
    path = write_sidecar(engine, original)
    assert path == sidecar_path(engine) == tmp_path / "8.7_trt10.3.0_fp16.json"
    assert read_sidecar(path) == original
    assert calibration_cache_path(engine).name == "8.7_trt10.3.0_fp16.calib"


def test_sidecar_errors_name_file_and_key(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(BundleError, match=r"x\.json: invalid JSON at line 1"):
        read_sidecar(path)
    data = make_sidecar().to_dict()
    del data["onnx_sha256"]
    path.write_text(__import__("json").dumps(data))
    with pytest.raises(BundleError, match=r"x\.json: missing key\(s\) onnx_sha256"):
        read_sidecar(path)
    data = make_sidecar().to_dict() | {"precision": "fp8"}
    path.write_text(__import__("json").dumps(data))
    with pytest.raises(BundleError, match=r"key 'precision' is 'fp8'; expected one of fp32, fp16, int8"):
        read_sidecar(path)


# --- selection --------------------------------------------------------------------------------------


def test_matching_engine_is_loaded():
    decision = choose_engine([record(make_sidecar())], ORIN, ONNX_SHA)
    assert decision.action == LOAD
    assert decision.engine_path.name == "8.7_trt10.3.0_fp16.engine"


def test_engine_for_another_gpu_is_rebuilt():
    xavier = RuntimeTarget("7.2", "10.3.0", "Xavier")
    decision = choose_engine([record(make_sidecar(xavier))], ORIN, ONNX_SHA)
    assert decision.action == REBUILD and decision.engine_path is None
    assert "compute capability 7.2 (Xavier), this GPU is 8.7 (Orin)" in decision.reason


def test_engine_for_another_tensorrt_is_rebuilt():
    decision = choose_engine([record(make_sidecar(RuntimeTarget("8.7", "10.1.0", "Orin")))], ORIN, ONNX_SHA)
    assert decision.action == REBUILD
    assert "built with TensorRT 10.1.0, this station runs 10.3.0" in decision.reason


def test_engine_of_a_changed_onnx_is_rebuilt():
    decision = choose_engine([record(make_sidecar(onnx_sha="b" * 64))], ORIN, ONNX_SHA)
    assert decision.action == REBUILD
    assert "built from another model.onnx (sha256 bbbbbbbbbbbb..., bundle has aaaaaaaaaaaa...)" in decision.reason


def test_no_engine_means_rebuild():
    decision = choose_engine([], ORIN, ONNX_SHA)
    assert decision.action == REBUILD and decision.reason == "no engine built yet for this bundle"


def test_precision_failed_parity_and_damaged_files_are_not_loaded():
    int8 = make_sidecar(precision="int8")
    failed = make_sidecar(parity={"passed": False})
    decision = choose_engine([record(int8), record(failed)], ORIN, ONNX_SHA, precision="fp16")
    assert decision.action == REBUILD
    assert "built for int8, fp16 asked for" in decision.reason
    assert "failed the parity check" in decision.reason
    assert decision.parity_failed == Path("engines") / failed.engine_file
    damaged = choose_engine([record(make_sidecar(), problem="engine file does not match the sha256")], ORIN, ONNX_SHA)
    assert damaged.action == REBUILD and "does not match the sha256" in damaged.reason
    # without a precision preference, the int8 engine the user built is fine
    assert choose_engine([record(int8)], ORIN, ONNX_SHA, precision=None).action == LOAD


def test_fp16_request_served_by_fp32_build_is_not_rebuilt_forever():
    decision = choose_engine([record(make_sidecar(used="fp32"))], ORIN, ONNX_SHA, precision="fp16")
    assert decision.action == LOAD and decision.sidecar.precision == "fp32"


def test_newest_matching_engine_wins():
    old = make_sidecar(precision="fp16", built_at="2026-11-01T00:00:00+00:00")
    new = make_sidecar(precision="int8", built_at="2026-11-20T00:00:00+00:00")
    decision = choose_engine([record(old), record(new)], ORIN, ONNX_SHA, precision=None)
    assert decision.action == LOAD and decision.engine_path.name.endswith("_int8.engine")


def test_scan_finds_missing_sidecars_and_replaced_engines(tmp_path):
    from onen.edge.bundle import sha256_file

    good = tmp_path / engine_file_name(ORIN, "fp16")
    good.write_bytes(b"serialized engine bytes")
    write_sidecar(good, make_sidecar(engine_sha256=sha256_file(good)))
    replaced = tmp_path / engine_file_name(ORIN, "int8")
    replaced.write_bytes(b"other bytes")
    write_sidecar(replaced, make_sidecar(precision="int8", engine_sha256="0" * 64))
    orphan = tmp_path / "8.7_trt10.3.0_fp32.engine"
    orphan.write_bytes(b"no sidecar")
    records = {r.engine_path.name: r for r in scan_engines(tmp_path)}
    assert records[good.name].problem == ""
    assert "does not match the sha256" in records[replaced.name].problem
    assert "sidecar does not exist" in records[orphan.name].problem
    decision = choose_engine(list(records.values()), ORIN, ONNX_SHA, precision=None)
    assert decision.action == LOAD and decision.engine_path == good
    assert scan_engines(tmp_path / "missing") == []


# --- lock -------------------------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from onen.edge.engines.lock import FileLock
    with FileLock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


@pytest.mark.slow
def test_lock_excludes_a_second_process(tmp_path):
    lock_file = tmp_path / "8.7_trt10.3.0_fp16.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_file), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waits = []
        started = time.monotonic()
        with pytest.raises(EngineLockTimeout, match=rf"still locked by pid {holder.pid}"):
            FileLock(lock_file, timeout_s=0.3, poll_s=0.05, on_wait=waits.append).acquire()
        assert time.monotonic() - started >= 0.3
        assert waits and f"held by pid {holder.pid}" in waits[0]
        # once the holder is done, the waiter gets the lock
        with FileLock(lock_file, timeout_s=10, poll_s=0.05) as lock:
            assert lock.held
            assert lock_file.read_text().strip() == str(__import__("os").getpid())
    finally:
        holder.wait(timeout=10)
    assert holder.returncode == 0


def test_lock_is_freed_when_the_holder_dies(tmp_path):
    lock_file = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_file), "60"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=10)
    with FileLock(lock_file, timeout_s=5, poll_s=0.05) as lock:
        assert lock.held


# --- INT8 calibration batching ----------------------------------------------------------------------


@pytest.fixture
def calibration_folder(tmp_path):
    folder = tmp_path / "calib"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(7):
        image = rng.integers(0, 255, size=(40 + index, 50, 3), dtype=np.uint8)
        target = folder / ("sub" if index == 6 else ".") / f"img_{index:02d}.png"
        cv2.imwrite(str(target), image)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_calibration_batches_over_a_folder(calibration_folder):
    paths = list_calibration_images(calibration_folder)
    assert [p.name for p in paths] == [f"img_{i:02d}.png" for i in range(6)] + ["img_06.png"]
    batches = list(calibration_batches(paths, batch_size=3, height=32, width=24))
    assert [b.shape for b in batches] == [(3, 32, 24, 3), (3, 32, 24, 3), (1, 32, 24, 3)]
    assert all(b.dtype == np.uint8 for b in batches)
    # exactly the edge's pre-processing, in list order
    expected = prepare_batch([read_image_rgb(p) for p in paths], 32, 24)
    np.testing.assert_array_equal(np.concatenate(batches), expected)


def test_calibration_batches_over_a_list_file(calibration_folder, tmp_path):
    listing = tmp_path / "int8_images.txt"
    absolute = calibration_folder / "img_03.png"
    listing.write_text(f"# good parts of camera 1\ncalib/img_05.png\n\n{absolute}\ncalib/sub/img_06.png\n")
    paths = list_calibration_images(listing)
    assert paths == [tmp_path / "calib/img_05.png", absolute, tmp_path / "calib/sub/img_06.png"]
    batches = list(calibration_batches(paths, batch_size=2, height=16, width=16))
    assert [len(b) for b in batches] == [2, 1]
    np.testing.assert_array_equal(batches[1][0], prepare_batch([read_image_rgb(paths[2])], 16, 16)[0])


def test_calibration_source_errors(tmp_path, calibration_folder):
    with pytest.raises(DataError, match="calibration images not found"):
        list_calibration_images(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no calibration images"):
        list_calibration_images(empty)
    listing = tmp_path / "list.txt"
    listing.write_text("calib/img_00.png\ncalib/missing.png\n")
    with pytest.raises(DataError, match=r"list\.txt: line 2: image 'calib/missing.png' does not exist"):
        list_calibration_images(listing)
    with pytest.raises(DataError, match="single image"):
        list_calibration_images(calibration_folder / "img_00.png")


def test_short_last_batch_is_padded_with_its_own_images():
    batch = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    padded = pad_batch(batch, 5)
    assert padded.shape == (5, 2, 2, 3) and padded.dtype == np.uint8
    for index, source in enumerate([0, 1, 0, 1, 0]):
        np.testing.assert_array_equal(padded[index], batch[source])
    assert pad_batch(batch, 2) is batch


# --- find-or-build orchestration (TensorRT cannot run here: the build step is a stand-in writing bytes) --

STAND_IN_BUILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from onen.edge.bundle import load_bundle, sha256_file
    from onen.edge.engines.builder import BuildOptions, BuildResult
    from onen.edge.engines.keys import EngineSidecar, RuntimeTarget, engine_file_name, write_sidecar
    from onen.edge.engines.manager import ensure_engine

    def stand_in_build(bundle, options, target):
        with open(BUILD_LOG, "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        time.sleep(BUILD_SECONDS)
        path = bundle.engines_dir / engine_file_name(target, options.precision)
        path.write_bytes(b"stand-in engine " + str(os.getpid()).encode())
        sidecar = EngineSidecar(target.tensorrt_version, target.compute_capability, target.gpu_name, options.precision,
                                options.precision, bundle.onnx_sha256, path.name, engine_sha256=sha256_file(path))
        write_sidecar(path, sidecar)
        return BuildResult(path, sidecar)
    """
)


def stand_in_namespace(build_log: Path, seconds: float) -> dict:
    namespace = {"BUILD_LOG": str(build_log), "BUILD_SECONDS": seconds}
    exec(STAND_IN_BUILD, namespace)
    return namespace


@pytest.fixture
def plain_bundle(tmp_path):
    """A bundle whose model.onnx is never parsed here (the build is a stand-in)."""
    from onen.edge.bundle import Manifest, load_bundle, write_manifest

    directory = tmp_path / "bundle"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"onnx bytes")
    write_manifest(
        directory, Manifest(name="m", version="1", family="test", input_height=8, input_width=8, class_names=["good"])
    )
    return load_bundle(directory)


def test_ensure_engine_builds_once_then_loads(plain_bundle, tmp_path):
    from onen.edge.engines.builder import BuildOptions
    from onen.edge.engines.manager import ensure_engine

    namespace = stand_in_namespace(tmp_path / "builds.log", 0.0)
    events = []
    first = ensure_engine(
        plain_bundle,
        ORIN,
        BuildOptions(),
        lambda kind, detail: events.append((kind, detail)),
        build=namespace["stand_in_build"],
    )
    assert first.built and first.engine_path.name == "8.7_trt10.3.0_fp16.engine"
    assert [kind for kind, _ in events] == ["engine_build_started", "engine_built"]
    assert (
        events[0][1]["reason"] == "no engine built yet for this bundle" and events[0][1]["compute_capability"] == "8.7"
    )
    events.clear()
    second = ensure_engine(
        plain_bundle, ORIN, BuildOptions(), lambda kind, detail: events.append(kind), build=namespace["stand_in_build"]
    )
    assert not second.built and second.engine_path == first.engine_path and events == []
    # a TensorRT upgrade on the station makes the engine stale: rebuilt, old one left alone
    upgraded = RuntimeTarget("8.7", "10.4.0", "Orin")
    third = ensure_engine(
        plain_bundle,
        upgraded,
        BuildOptions(),
        lambda kind, detail: events.append((kind, detail)),
        build=namespace["stand_in_build"],
    )
    assert third.built and third.engine_path.name == "8.7_trt10.4.0_fp16.engine"
    assert "built with TensorRT 10.3.0, this station runs 10.4.0" in events[0][1]["reason"]
    assert (tmp_path / "builds.log").read_text().count("\n") == 2


def test_failed_build_is_announced(plain_bundle):
    from onen.edge.engines.builder import BuildOptions, EngineBuildError
    from onen.edge.engines.manager import ensure_engine

    def failing_build(bundle, options, target):
        raise EngineBuildError("model.onnx: node 7 'attn' (Einsum): UNSUPPORTED_NODE")

    events = []
    with pytest.raises(EngineBuildError, match="UNSUPPORTED_NODE"):
        ensure_engine(
            plain_bundle, ORIN, BuildOptions(), lambda kind, detail: events.append((kind, detail)), build=failing_build
        )
    assert [kind for kind, _ in events] == ["engine_build_started", "engine_build_failed"]
    assert "UNSUPPORTED_NODE" in events[1][1]["error"]


def test_two_processes_build_the_same_engine_only_once(plain_bundle, tmp_path):
    build_log = tmp_path / "builds.log"
    script = STAND_IN_BUILD + textwrap.dedent(
        f"""
        BUILD_LOG, BUILD_SECONDS = {str(build_log)!r}, 1.0
        target = RuntimeTarget("8.7", "10.3.0", "Orin")
        outcome = ensure_engine(load_bundle(sys.argv[1]), target, BuildOptions(), build=stand_in_build)
        print("built" if outcome.built else "loaded", outcome.engine_path.name, flush=True)
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(plain_bundle.path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = sorted(p.communicate(timeout=60)[0].strip() for p in processes)
    assert [p.returncode for p in processes] == [0, 0]
    assert outputs == ["built 8.7_trt10.3.0_fp16.engine", "loaded 8.7_trt10.3.0_fp16.engine"]
    assert build_log.read_text().count("\n") == 1


def test_build_options_are_checked_before_anything_runs():
    from onen.edge.engines.builder import (
        BuildOptions,
        BuildOptionsError,
        EngineBuildError,
        batch_profile,
        check_network_input,
    )

    with pytest.raises(BuildOptionsError, match="--int8 needs --calib-images"):
        BuildOptions(precision="int8").validate()
    with pytest.raises(BuildOptionsError, match="--workspace must be > 0 GB, got -1"):
        BuildOptions(workspace_gb=-1).validate()
    with pytest.raises(BuildOptionsError, match="--max-batch must be >= 1, got 0"):
        BuildOptions(max_batch=0).validate()
    with pytest.raises(BuildOptionsError, match="only used with --int8"):
        BuildOptions(calib_images=Path("x")).validate()
    assert BuildOptions(workspace_gb=1.5).workspace_bytes == 1536 * 1024 * 1024
    assert batch_profile(64, 48, 4) == ((1, 64, 48, 3), (4, 64, 48, 3), (4, 64, 48, 3))
    check_network_input("image", [-1, 64, 48, 3], "image", 64, 48, 8)
    with pytest.raises(EngineBuildError, match="fixed batch of 1; use --max-batch 1"):
        check_network_input("image", [1, 64, 48, 3], "image", 64, 48, 4)
    with pytest.raises(EngineBuildError, match=r"expected \[N, 64, 48, 3\]"):
        check_network_input("image", [-1, 3, 64, 48], "image", 64, 48, 1)


class ParserErrorLike:
    """The shape of TensorRT 10's ParserError (code/desc/node/node_name/node_operator), for formatting only."""

    def __init__(self, node, name="", operator=""):
        self._node, self._name, self._operator = node, name, operator

    def code(self):
        return "ErrorCode.UNSUPPORTED_NODE"

    def desc(self):
        return "no importer registered for op"

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._operator


def test_parser_errors_are_reported_by_node():
    from onen.edge.engines.builder import describe_parser_error

    assert (
        describe_parser_error(ParserErrorLike(12, "/blocks.0/attn/Einsum", "Einsum"))
        == "node 12 '/blocks.0/attn/Einsum' (Einsum): ErrorCode.UNSUPPORTED_NODE: no importer registered for op"
    )
    assert describe_parser_error(ParserErrorLike(-1)) == "ErrorCode.UNSUPPORTED_NODE: no importer registered for op"


def test_engine_that_failed_parity_is_not_rebuilt_in_a_loop(plain_bundle, tmp_path):
    from onen.edge.engines.builder import BuildOptions
    from onen.edge.engines.manager import EngineParityError, ensure_engine

    namespace = stand_in_namespace(tmp_path / "builds.log", 0.0)
    built = ensure_engine(plain_bundle, ORIN, BuildOptions(), build=namespace["stand_in_build"])
    built.sidecar.parity = {"passed": False, "max_score_diff": 0.2}
    write_sidecar(built.engine_path, built.sidecar)
    with pytest.raises(EngineParityError, match=r"failed the parity check .* `onen build-engine --fp32 BUNDLE`"):
        ensure_engine(plain_bundle, ORIN, BuildOptions(), build=namespace["stand_in_build"], any_precision=True)
    assert (tmp_path / "builds.log").read_text().count("\n") == 1
    # the way out the message gives: an FP32 engine, which the daemon (any precision) then loads
    fp32 = ensure_engine(plain_bundle, ORIN, BuildOptions(precision="fp32"), build=namespace["stand_in_build"])
    assert fp32.built and fp32.engine_path.name == "8.7_trt10.3.0_fp32.engine"
    chosen = ensure_engine(plain_bundle, ORIN, BuildOptions(), build=namespace["stand_in_build"], any_precision=True)
    assert not chosen.built and chosen.engine_path == fp32.engine_path
    # --force rebuilds the failed one anyway
    forced = ensure_engine(plain_bundle, ORIN, BuildOptions(), build=namespace["stand_in_build"], force=True)
    assert forced.built and forced.engine_path == built.engine_path


def test_int8_calibration_cache_is_reused_only_for_the_same_model_and_images():
    from onen.edge.engines.builder import BuildOptions, calibration_cache_is_stale

    previous = make_sidecar(
        precision="int8", build_options=BuildOptions(precision="int8", calib_images=Path("int8.txt")).to_dict()
    )
    assert not calibration_cache_is_stale(previous, ONNX_SHA, Path("int8.txt"))
    assert calibration_cache_is_stale(previous, "c" * 64, Path("int8.txt"))
    assert calibration_cache_is_stale(previous, ONNX_SHA, Path("other.txt"))
    assert calibration_cache_is_stale(None, ONNX_SHA, Path("int8.txt"))
