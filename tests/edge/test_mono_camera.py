"""`source.color: mono`: a monochrome camera's frames are resized in one channel; the model sees the same pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from support.daemon import Collector, file_camera, reference_frames, start_daemon, unique_in_order, write_station

from onen.edge.images import grey_plane, prepare_batch, read_image_rgb
from onen.edge.local_broker import MosquittoBroker
from onen.edge.rectify import Rectification


def test_a_grey_plane_resized_gives_exactly_the_input_of_the_rgb_frame(magnetic_tile_dir):
    """Real grey parts (magnetic tile), shrunk to odd and integer sizes, enlarged, rectified: bit for bit the same."""
    paths = sorted((magnetic_tile_dir / "MT_Blowhole" / "Imgs").glob("*.jpg"))[:4]
    frames = [cv2.resize(read_image_rgb(p), (512, 384), interpolation=cv2.INTER_LINEAR) for p in paths]
    tilted = Rectification(corners=((40.5, 30.0), (470.0, 52.0), (455.0, 350.0), (30.0, 330.5)))
    for frame in frames:
        plane = grey_plane(frame)
        assert plane is not None and plane.shape == frame.shape[:2]
        for height, width in ((224, 224), (144, 112), (128, 128), (96, 256), (768, 1024)):
            assert np.array_equal(prepare_batch([plane], height, width), prepare_batch([frame], height, width))
        rectified = prepare_batch([tilted.apply(plane)], 224, 224)
        assert np.array_equal(rectified, prepare_batch([tilted.apply(frame)], 224, 224))
        assert rectified.shape == (1, 224, 224, 3) and rectified.dtype == np.uint8
    batch = prepare_batch([grey_plane(f) for f in frames], 128, 128)
    assert np.array_equal(batch, prepare_batch(frames, 128, 128))


def test_a_frame_in_colour_is_not_taken_for_grey(magnetic_tile_dir):
    frame = read_image_rgb(sorted((magnetic_tile_dir / "MT_Free" / "Imgs").glob("*.jpg"))[0])
    assert grey_plane(frame) is not None
    tinted = frame.copy()
    tinted[0, 5, 2] ^= 1  # one value of the first row, one grey level off
    assert grey_plane(tinted) is None
    colour = frame.copy()
    colour[..., 0] = np.clip(colour[..., 0].astype(int) + 30, 0, 255)
    assert grey_plane(colour) is None


def test_a_mono_camera_publishes_the_scores_of_an_rgb_camera_and_counts_colour_frames(tmp_path, tiny_bundle):
    """Two cameras on one film, `rgb` and `mono`, through a real mosquitto: the same raw score for every frame,
    and the mono camera counts (and says once) the frames it had to resize in colour."""
    images, _ = reference_frames(tiny_bundle)
    count = 16
    video = tmp_path / "mono.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, images[0].shape[1::-1], isColor=False)
    assert writer.isOpened()
    for seq in range(count):  # a mono camera's film: one grey channel per frame
        writer.write(cv2.cvtColor(images[seq % len(images)], cv2.COLOR_RGB2GRAY))
    writer.release()
    colour_video = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(str(colour_video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, images[0].shape[1::-1])
    for seq in range(4):
        writer.write(cv2.cvtColor(images[seq % len(images)], cv2.COLOR_RGB2BGR))
    writer.release()
    with MosquittoBroker() as broker:
        cameras = [
            file_camera("rgb", video),
            file_camera("mono", video, color="mono"),
            file_camera("wrong", colour_video, color="mono"),  # a colour camera set up as mono
        ]
        config = write_station(tmp_path, broker.port, tiny_bundle, cameras)
        collector = Collector(broker.host, broker.port)
        _, thread = start_daemon(config, exit_when_finished=True)
        thread.join(120)
        assert not thread.is_alive()
        assert collector.wait(lambda c: len(c.results()) >= 2 * count + 4)

        def counters(c):
            stats = [json.loads(p) for p, _ in c.on("/stats")]
            return stats[-1]["counters"] if stats else {}

        assert collector.wait(lambda c: counters(c).get("frames") == 2 * count + 4), counters(collector)
        results = collector.results()
        said = [e["detail"] for e in collector.events() if e["kind"] == "colour_frame"]
        last = counters(collector)
        collector.close()
    by_camera = {name: [r for r in results if r["camera"] == name] for name in ("rgb", "mono", "wrong")}
    assert unique_in_order(by_camera["mono"]) == list(range(count)) == unique_in_order(by_camera["rgb"])
    rgb_scores = {r["seq"]: r["raw_score"] for r in by_camera["rgb"]}
    assert {r["seq"]: r["raw_score"] for r in by_camera["mono"]} == rgb_scores  # exactly, not approximately
    assert {r["seq"]: r["verdict"] for r in by_camera["mono"]} == {r["seq"]: r["verdict"] for r in by_camera["rgb"]}
    assert "colour_frames.mono" not in last and "colour_frames.rgb" not in last
    assert last["colour_frames.wrong"] == 4 and len(by_camera["wrong"]) == 4  # inspected all the same
    assert len(said) == 1 and said[0]["camera"] == "wrong" and "cameras.wrong.source.color is mono" in said[0]["reason"]


@pytest.mark.parametrize("value", ["grey", "RGB"])
def test_an_unknown_color_stops_before_the_line_starts(tmp_path, value):
    from onen.edge.config import ConfigError, load_config

    config = write_station(tmp_path, 1883, tmp_path, [file_camera("top", tmp_path / "v.avi", color=value)])
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "cameras.top.source.color" in str(caught.value) and "mono" in str(caught.value)
