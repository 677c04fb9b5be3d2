"""The fleet file's checks (every mistake with file:line and key), the rollout's waves and its reject-rate gate."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from onen.edge.config import ConfigError
from onen.edge.fleet_config import load_fleet
from onen.edge.fleet_rollout import binomial_tail, plan_waves, too_many_rejects


@pytest.fixture
def bundle_dir(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"name": "widget", "version": "3"}))
    return folder


def _write(tmp_path, text: str):
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_fleet_file_loads_with_defaults_and_paths_next_to_it(tmp_path, bundle_dir):
    (tmp_path / "top.yaml").write_text("camera: top\n")
    config = load_fleet(
        _write(
            tmp_path,
            """\
            broker: {host: central.plant, port: 8883}
            groups:
              line-a: {bundle: bundle, version: "3", calibrations: {top: top.yaml}}
            stations:
              press-1: {group: line-a}
              press-2: {group: line-a}
            """,
        )
    )
    assert config.groups["line-a"].bundle == bundle_dir
    assert config.groups["line-a"].calibrations["top"] == tmp_path / "top.yaml"
    assert config.canary() == ["press-1"] and config.rollout.wave_size == 5 and config.broker.prefix == "onen"


def test_every_mistake_is_named_with_file_line_and_key(tmp_path, bundle_dir):
    path = _write(
        tmp_path,
        """\
        broker: {host: central.plant, port: 99999}
        signing_key: keys/missing.pem
        groups:
          line-a: {bundle: bundle, version: "2", calibrations: {top: nowhere.yaml}}
        stations:
          press-1: {group: line-b}
          press-2: {grup: line-a}
        rollout:
          canary: [press-9]
          wave_sise: 3
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    text = str(caught.value)
    expected = [
        f"{path}:1: broker.port:",
        f"{path}:2: signing_key: file not found",
        f"{path}:4: groups.line-a.version: the bundle's manifest says version '3'",
        f"{path}:4: groups.line-a.calibrations.top: file not found",
        f"{path}:6: stations.press-1.group: no such group (got 'line-b'); expected one of line-a",
        f"{path}:7: stations.press-2.grup: unknown key 'grup' (did you mean 'group'?); expected one of group",
        f"{path}:9: rollout.canary[0]: not a station of this file (got 'press-9')",
        f"{path}:10: rollout.wave_sise: unknown key 'wave_sise' (did you mean 'wave_size'?)",
    ]
    for line in expected:
        assert line in text, f"{line!r} not in:\n{text}"
    assert "missing key 'group'" not in text, "the misspelt key's message is enough"
    assert text.startswith(f"8 problems in {path}:")


def test_a_bundle_folder_without_manifest_is_refused_at_load(tmp_path, bundle_dir):
    shutil.rmtree(bundle_dir)
    bundle_dir.mkdir()
    path = _write(tmp_path, "broker: {host: h}\ngroups: {g: {bundle: bundle}}\nstations: {s: {group: g}}\n")
    with pytest.raises(ConfigError, match=r"fleet.yaml:2: groups.g.bundle: no manifest.json in this folder"):
        load_fleet(path)


def test_waves_are_the_canary_alone_then_the_rest_in_file_order():
    stations = ["a", "b", "c", "d", "e"]
    assert plan_waves(stations, ["c"], 2) == [["c"], ["a", "b"], ["d", "e"]]
    assert plan_waves(stations, ["a", "b"], 5) == [["a", "b"], ["c", "d", "e"]]


def test_the_reject_gate_halts_only_on_more_rejects_than_the_bound_explains():
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(1, 1, 0.005) == pytest.approx(0.005)
    assert binomial_tail(2, 3, 0.5) == pytest.approx(0.5)  # 3/8 + 1/8
    assert not too_many_rejects(0, 600, 0.005, 0.95)
    assert not too_many_rejects(5, 600, 0.005, 0.95)  # 3 expected: 5 is within chance
    assert too_many_rejects(10, 600, 0.005, 0.95)
    assert too_many_rejects(3, 20, 0.005, 0.95)
    assert not too_many_rejects(3, 20, 0.3, 0.95)  # the line's defect rate allowed on top
