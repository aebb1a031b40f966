"""Window settings per data directory: defaults, round trip, atomic writes, and files mangled by hand."""

from __future__ import annotations

import json
import os

import pytest

from gui.settings import FILE_NAME, MIN_WIDTH, Settings, load, save


def test_a_new_data_dir_gets_the_defaults(tmp_path):
    assert load(tmp_path) == Settings()
    assert Settings().geometry == "1000x720"
    assert Settings().appearance == "System"


def test_settings_round_trip_through_the_file(tmp_path):
    saved = Settings(900, 650, 40, -12, 1.25, "Dark")
    save(tmp_path, saved)
    assert load(tmp_path) == saved
    assert saved.geometry == "900x650+40+-12"


def test_saving_leaves_no_temporary_file_and_replaces_the_old_one(tmp_path):
    save(tmp_path, Settings(width=800))
    save(tmp_path, Settings(width=801))
    assert os.listdir(tmp_path) == [FILE_NAME]
    assert json.loads((tmp_path / FILE_NAME).read_text())["width"] == 801


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "\xff\xfe", '"text"', "[" * 100_000])
def test_an_unreadable_file_falls_back_to_the_defaults(tmp_path, content):
    (tmp_path / FILE_NAME).write_text(content, encoding="latin-1")
    assert load(tmp_path) == Settings()


@pytest.mark.parametrize("scaling", [True, 1, "1.0", None])
def test_a_scaling_that_is_not_a_listed_number_falls_back_to_1(tmp_path, scaling):
    (tmp_path / FILE_NAME).write_text(json.dumps({"scaling": scaling}))
    loaded = load(tmp_path)
    assert type(loaded.scaling) is float and loaded.scaling == 1.0


def test_bad_values_fall_back_one_by_one(tmp_path):
    (tmp_path / FILE_NAME).write_text(json.dumps(
        {"width": 10, "height": 700, "x": "left", "y": 5, "scaling": 9.0, "appearance": "Purple"}))
    assert load(tmp_path) == Settings(width=1000, height=700, x=None, y=5)


@pytest.mark.parametrize(("geometry", "expected"), [
    ("800x600+10+20", (800, 600, 10, 20)),
    ("800x600+-5+0", (800, 600, -5, 0)),
    ("800x600", (800, 600, None, None)),
    ("100x100+0+0", (MIN_WIDTH, 520, 0, 0)),
    ("garbage", (1000, 720, None, None)),
])
def test_tk_geometry_answers_are_read_safely(geometry, expected):
    s = Settings().with_geometry(geometry)
    assert (s.width, s.height, s.x, s.y) == expected


def test_alerts_default_to_notify_urgent_and_raise_but_no_sound(tmp_path):
    from gui.settings import Alerts, load_alerts
    assert load_alerts(tmp_path) == Alerts(notify=True, urgent=True, raise_window=True, sound=False)


def test_alerts_round_trip_and_survive_a_geometry_save(tmp_path):
    from gui.settings import Alerts, load_alerts, save_alerts
    save_alerts(tmp_path, Alerts(notify=False, sound=True))
    save(tmp_path, Settings(width=900))
    assert load_alerts(tmp_path) == Alerts(notify=False, sound=True)


@pytest.mark.parametrize("content", ['{"notify": "no", "sound": 1}', "[]", "{bad"])
def test_mangled_alert_values_fall_back_one_by_one(tmp_path, content):
    from gui.settings import ALERTS_FILE, Alerts, load_alerts
    (tmp_path / ALERTS_FILE).write_text(content)
    assert load_alerts(tmp_path) == Alerts()
