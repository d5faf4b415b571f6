"""Metric names, label sets and series lifecycle (metrics.py), read from a fresh registry."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edgeblur import __version__
from edgeblur.live.metrics import (
    FRAME_RESULTS,
    KINDS,
    OUTPUTS,
    QUEUES,
    RECONNECT_STAGES,
    REGION_REASONS,
    SINKS,
    SOURCE_DROP_REASONS,
    STAGES,
    Metrics,
)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def camera_samples(m: Metrics, camera: str) -> list[tuple[str, dict[str, str]]]:
    """Every exported sample that carries ``camera=<camera>``."""
    return [
        (s.name, s.labels)
        for family in m.registry.collect()
        for s in family.samples
        if s.labels.get("camera") == camera
    ]


# Every series camera("gate") must create, at 0, so a dead camera reads 0 rather than nothing.
EXPECTED_ZERO = [
    ("edgeblur_source_frames_total", {}),
    *[("edgeblur_source_dropped_frames_total", {"reason": r}) for r in SOURCE_DROP_REASONS],
    *[("edgeblur_frames_total", {"result": r}) for r in FRAME_RESULTS],
    ("edgeblur_unchecked_frames_published_total", {}),
    *[("edgeblur_reconnects_total", {"stage": s}) for s in RECONNECT_STAGES],
    ("edgeblur_camera_up", {}),
    ("edgeblur_last_publish_timestamp_seconds", {}),
    *[("edgeblur_detections_total", {"kind": k}) for k in KINDS],
    *[
        ("edgeblur_regions_hidden_total", {"kind": k, "reason": r})
        for k in KINDS
        for r in REGION_REASONS
    ],
    ("edgeblur_tracks_active", {}),
    ("edgeblur_latency_seconds_count", {}),
    ("edgeblur_latency_seconds_sum", {}),
    *[("edgeblur_queue_depth", {"queue": q}) for q in QUEUES],
    *[("edgeblur_sink_bytes_total", {"sink": s}) for s in SINKS],
    *[("edgeblur_output_frames_total", {"output": o}) for o in OUTPUTS],
    *[("edgeblur_output_errors_total", {"output": o}) for o in OUTPUTS],
]


def test_label_sets_are_the_documented_ones() -> None:
    assert SOURCE_DROP_REASONS == ("overrun", "decode_error")
    assert FRAME_RESULTS == (
        "published",
        "dropped_unchecked",
        "dropped_late",
        "dropped_error",
        "blurred_whole",
        "dropped_output",
    )
    assert KINDS == ("face", "plate")
    assert REGION_REASONS == ("detected", "tracked")
    assert STAGES == (
        "decode",
        "preprocess",
        "inference",
        "postprocess",
        "track",
        "anonymize",
        "encode",
    )


def test_build_info(metrics: Metrics) -> None:
    assert value(metrics, "edgeblur_build_info", version=__version__) == 1.0


@pytest.mark.parametrize(("name", "labels"), EXPECTED_ZERO)
def test_camera_creates_every_series_at_zero(metrics: Metrics, name: str, labels: dict) -> None:
    assert value(metrics, name, camera="gate", **labels) is None
    metrics.camera("gate")
    assert value(metrics, name, camera="gate", **labels) == 0.0


def test_camera_is_idempotent(metrics: Metrics) -> None:
    first = metrics.camera("gate")
    first.frames["published"].inc()
    again = metrics.camera("gate")
    assert again is first
    assert value(metrics, "edgeblur_frames_total", camera="gate", result="published") == 1.0
    assert metrics.cameras() == ["gate"]


def test_counters_gauges_and_histograms_move(metrics: Metrics) -> None:
    m = metrics.camera("gate")
    m.source_frames.inc(3)
    m.source_dropped["overrun"].inc()
    m.frames["published"].inc(2)
    m.frames["dropped_late"].inc()
    m.reconnects["source"].inc()
    m.up.set(1)
    m.last_publish.set(1_700_000_000.5)
    m.detections["face"].inc(4)
    m.regions[("plate", "tracked")].inc(2)
    m.tracks_active.set(5)
    m.latency.observe(0.04)
    m.sink_bytes["rtsp"].inc(1500)

    def v(name: str, **labels: str) -> float | None:
        return value(metrics, name, camera="gate", **labels)

    assert v("edgeblur_source_frames_total") == 3
    assert v("edgeblur_source_dropped_frames_total", reason="overrun") == 1
    assert v("edgeblur_source_dropped_frames_total", reason="decode_error") == 0
    assert v("edgeblur_frames_total", result="published") == 2
    assert v("edgeblur_frames_total", result="dropped_late") == 1
    assert v("edgeblur_unchecked_frames_published_total") == 0
    assert v("edgeblur_reconnects_total", stage="source") == 1
    assert v("edgeblur_camera_up") == 1
    assert v("edgeblur_last_publish_timestamp_seconds") == 1_700_000_000.5
    assert v("edgeblur_detections_total", kind="face") == 4
    assert v("edgeblur_regions_hidden_total", kind="plate", reason="tracked") == 2
    assert v("edgeblur_regions_hidden_total", kind="face", reason="tracked") == 0
    assert v("edgeblur_tracks_active") == 5
    assert v("edgeblur_latency_seconds_count") == 1
    assert v("edgeblur_latency_seconds_bucket", le="0.05") == 1
    assert v("edgeblur_latency_seconds_bucket", le="0.025") == 0
    assert v("edgeblur_sink_bytes_total", sink="rtsp") == 1500


def test_latency_buckets_span_5ms_to_2s(metrics: Metrics) -> None:
    metrics.camera("gate")
    les = {
        s.labels["le"]
        for fam in metrics.registry.collect()
        for s in fam.samples
        if s.name == "edgeblur_latency_seconds_bucket"
    }
    assert {"0.005", "2.0", "+Inf"} <= les
    assert "0.001" not in les


def test_stage_and_batch_histograms(metrics: Metrics) -> None:
    for stage in STAGES:  # created up front, so every stage reads 0 before its first call
        assert value(metrics, "edgeblur_stage_seconds_count", stage=stage, group="") == 0
    metrics.stage("inference", "centerface+yolov8n-plate").observe(0.03)
    got = {"stage": "inference", "group": "centerface+yolov8n-plate"}
    assert value(metrics, "edgeblur_stage_seconds_count", **got) == 1
    assert value(metrics, "edgeblur_stage_seconds_sum", **got) == pytest.approx(0.03)
    assert value(metrics, "edgeblur_stage_seconds_count", stage="inference", group="") == 0
    assert metrics.stage("inference", "g") is metrics.stage("inference", "g")
    with pytest.raises(ValueError, match="looks like a URL"):
        metrics.stage("inference", "rtsp://u:p@h/x")
    metrics.batch("face").observe(6)
    assert value(metrics, "edgeblur_inference_batch_size_bucket", model="face", le="8.0") == 1
    assert value(metrics, "edgeblur_inference_batch_size_bucket", model="face", le="4.0") == 0
    assert metrics.batch("face") is metrics.batch("face")
    with pytest.raises(ValueError, match="stage must be one of"):
        metrics.stage("warmup")


def test_remove_camera_removes_its_series_only(metrics: Metrics) -> None:
    metrics.camera("gate").frames["published"].inc()
    metrics.camera("yard")
    metrics.remove_camera("gate")
    assert camera_samples(metrics, "gate") == []
    assert value(metrics, "edgeblur_frames_total", camera="yard", result="published") == 0
    assert metrics.cameras() == ["yard"]
    metrics.remove_camera("gate")  # no-op the second time
    # Re-adding starts from 0 again.
    metrics.camera("gate")
    assert value(metrics, "edgeblur_frames_total", camera="gate", result="published") == 0


def test_queue_depth_is_read_at_scrape_time(metrics: Metrics) -> None:
    m = metrics.camera("gate")
    depth = [0]
    m.set_queue_depth("source", lambda: depth[0])
    assert value(metrics, "edgeblur_queue_depth", camera="gate", queue="source") == 0
    depth[0] = 7
    assert value(metrics, "edgeblur_queue_depth", camera="gate", queue="source") == 7
    depth[0] = 2
    assert value(metrics, "edgeblur_queue_depth", camera="gate", queue="source") == 2
    assert value(metrics, "edgeblur_queue_depth", camera="gate", queue="publish") == 0


def test_queue_depth_failure_reads_nan_and_keeps_the_scrape(metrics: Metrics) -> None:
    m = metrics.camera("gate")

    def broken() -> float:
        raise RuntimeError("queue gone")

    m.set_queue_depth("publish", broken)
    got = value(metrics, "edgeblur_queue_depth", camera="gate", queue="publish")
    assert got is not None and math.isnan(got)
    assert b"edgeblur_frames_total" in generate_latest(metrics.registry)
    with pytest.raises(ValueError, match="queue must be one of"):
        m.set_queue_depth("inference", lambda: 0)


@pytest.mark.parametrize(
    "name",
    ["rtsp://admin:hunter2@10.0.0.5/stream1", "admin@cam", "http://cam/x", ""],
)
def test_urlish_camera_names_are_rejected_without_echo(metrics: Metrics, name: str) -> None:
    with pytest.raises(ValueError) as info:
        metrics.camera(name)
    if name:
        assert name not in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError):
        metrics.batch(name)


def test_exposition_has_no_url(metrics: Metrics) -> None:
    for cam in ("gate", "yard-2", "lot_3"):
        metrics.camera(cam).frames["published"].inc()
    metrics.batch("face").observe(4)
    text = generate_latest(metrics.registry).decode()
    assert "://" not in text
    assert "@" not in text
    # The dashboard's names are all there.
    for name in (
        "edgeblur_build_info",
        "edgeblur_source_frames_total",
        "edgeblur_source_dropped_frames_total",
        "edgeblur_frames_total",
        "edgeblur_unchecked_frames_published_total",
        "edgeblur_reconnects_total",
        "edgeblur_camera_up",
        "edgeblur_last_publish_timestamp_seconds",
        "edgeblur_detections_total",
        "edgeblur_regions_hidden_total",
        "edgeblur_tracks_active",
        "edgeblur_latency_seconds_bucket",
        "edgeblur_stage_seconds_bucket",
        "edgeblur_inference_batch_size_bucket",
        "edgeblur_queue_depth",
        "edgeblur_sink_bytes_total",
    ):
        assert f"\n{name}{{" in text, name


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.camera("gate").frames["published"].inc()
    b.camera("gate")
    assert a.registry is not b.registry
    assert (
        b.registry.get_sample_value(
            "edgeblur_frames_total", {"camera": "gate", "result": "published"}
        )
        == 0
    )


def test_process_collector_and_no_created_series(metrics: Metrics) -> None:
    metrics.camera("gate").frames["published"].inc()
    metrics.stage("inference", "face").observe(0.01)
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        assert f"\n{name} " in text, name
    assert "per batch" in text and "per frame" in text  # stage_seconds' help says which


def test_runtime_info_is_replaced_whole(metrics: Metrics) -> None:
    """A reload that drops a group must not leave its old runtime series behind."""
    metrics.set_runtimes(
        [
            ("centerface", "centerface", "openvino-cpu", "bf16"),
            ("centerface", "yolov8n-plate", "openvino-cpu", "bf16"),
        ]
    )
    labels = {"group": "centerface", "model": "centerface"}
    assert (
        value(metrics, "edgeblur_runtime_info", runtime="openvino-cpu", precision="bf16", **labels)
        == 1
    )
    metrics.set_runtimes([("scrfd", "scrfd", "tensorrt", "fp16")])
    text = generate_latest(metrics.registry).decode()
    assert 'group="centerface"' not in text
    assert (
        value(
            metrics,
            "edgeblur_runtime_info",
            group="scrfd",
            model="scrfd",
            runtime="tensorrt",
            precision="fp16",
        )
        == 1
    )
    with pytest.raises(ValueError, match="URL"):
        metrics.set_runtimes([("g", "m", "rtsp://user:pw@cam/x", "fp32")])


def test_remove_group_drops_its_schedule_gauges(metrics: Metrics) -> None:
    metrics.schedule("centerface", 1, {"face": (2, 1, 640), "plate": (4, 2, 1280)})
    metrics.schedule("scrfd", 0, {"face": (1, 1, None)})
    metrics.remove_group("centerface")
    metrics.remove_group("never-there")  # a no-op
    text = generate_latest(metrics.registry).decode()
    assert 'group="centerface"' not in text
    assert value(metrics, "edgeblur_detect_stride", group="scrfd", role="face") == 1
    assert "edgeblur_detect_input_width{" not in text  # scrfd's width is its model's own


def test_remove_group_drops_its_stage_series(metrics: Metrics) -> None:
    metrics.stage("inference", "old").observe(0.01)
    metrics.stage("inference", "kept").observe(0.01)
    metrics.remove_group("old")
    text = generate_latest(metrics.registry).decode()
    assert 'group="old"' not in text and 'group="kept"' in text
    metrics.stage("inference", "old").observe(0.01)  # a group that comes back starts again
    assert value(metrics, "edgeblur_stage_seconds_count", stage="inference", group="old") == 1
