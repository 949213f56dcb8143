"""Object key naming and sanitising (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from vidpipe.errors import UsageError
from vidpipe.jobs.keys import (
    MAX_KEY_BYTES,
    MODES,
    local_name_for_key,
    make_object_key,
    parse_s3_url,
    validate_key,
)

WHEN = datetime(2025, 11, 26, 14, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize("mode", MODES)
def test_naming_rule(mode):
    assert make_object_key("/workspace/in/clip.MP4", mode, now=WHEN) == f"clip_{mode}_20251126_143005.mp4"


def test_timestamp_is_utc_whatever_the_zone():
    moscow = WHEN.astimezone(timezone(timedelta(hours=3)))
    assert make_object_key("a.mkv", "both", now=moscow) == "a_both_20251126_143005.mkv"
    with pytest.raises(UsageError, match="timezone-aware"):
        make_object_key("a.mkv", "both", now=datetime(2025, 1, 1))


def test_ext_override_prefix_and_s3_input():
    key = make_object_key("s3://bkt/dir/movie.mov", "result", ext=".MP4", now=WHEN, prefix="jobs/42/")
    assert key == "jobs/42/movie_result_20251126_143005.mp4"
    assert make_object_key("noext", "upscaled", now=WHEN) == "noext_upscaled_20251126_143005.mp4"


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(UsageError, match="upscaled, interpolated, both, result"):
        make_object_key("a.mp4", "sharpened", now=WHEN)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("../../etc/passwd.mp4", "passwd"),
        ("..mp4", "output"),  # stem ".." would be a traversal segment
        ("my clip (final).mp4", "my_clip_final_"),
        ("a\x00b\x1fc\u202e.mp4", "a_b_c_"),
        ("..hidden.mp4", "hidden"),
        ("видео.mp4", "видео"),
        ("C:\\videos\\win.mp4", "win"),
    ],
)
def test_generated_keys_rewrite_odd_names(name, stem):
    key = make_object_key(name, "upscaled", now=WHEN)
    assert key == f"{stem}_upscaled_20251126_143005.mp4"
    assert validate_key(key) == key


def test_generated_key_truncated_to_1024_bytes_on_char_boundary():
    key = make_object_key("é" * 2000 + ".mp4", "upscaled", now=WHEN, prefix="p")
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert key.endswith("_upscaled_20251126_143005.mp4") and key.startswith("p/éé")
    key.encode("utf-8")  # no half characters


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs/key.mp4",
        "../up.mp4",
        "a/../b.mp4",
        "a/./b.mp4",
        "a/..",
        "nul\x00.mp4",
        "tab\t.mp4",
        "del\x7f.mp4",
        "bidi\u202e.mp4",
        "back\\slash.mp4",
        "x" * 1025,
        "é" * 513,
        "surrogate\ud800.mp4",
    ],
)
def test_user_keys_rejected(key):
    with pytest.raises(UsageError, match="object key"):
        validate_key(key)


@pytest.mark.parametrize("key", ["a.mp4", "dir/sub/a b.mp4", "x" * 1024, "é" * 512, "a..b.mp4", "dir//a.mp4"])
def test_user_keys_accepted(key):
    assert validate_key(key) == key


def test_unsafe_prefix_rejected():
    with pytest.raises(UsageError):
        make_object_key("a.mp4", "upscaled", now=WHEN, prefix="../escape")


@pytest.mark.parametrize("ext", ["", "m p4", "x" * 17, "mp4/../x"])
def test_bad_extension(ext):
    with pytest.raises(UsageError, match="extension"):
        make_object_key("a.mp4", "upscaled", now=WHEN, ext=ext)


def test_parse_s3_url():
    assert parse_s3_url("s3://my-bucket/dir/a.mp4") == ("my-bucket", "dir/a.mp4")
    for bad in ["http://x/y", "s3://bucket", "s3://bucket/", "s3://Bad_Bucket/a", "s3://bkt/../a"]:
        with pytest.raises(UsageError):
            parse_s3_url(bad)


@pytest.mark.parametrize(
    ("key", "name"),
    [("dir/clip.mp4", "clip.mp4"), ("a/..evil", "evil"), ("x/ bad name?.mkv", "_bad_name_.mkv"), ("d/...", "input")],
)
def test_local_name_for_key_stays_in_dir(key, name):
    assert local_name_for_key(key) == name
