"""The live frame path without RTSP: the inference worker's planning, batching and routing, and
the publisher's handling of one frame (track → gate → anonymize → sinks), with the real models,
a real preview sink and real metrics. Threads are not started: ``step`` and ``handle`` are
called directly, so every assertion is about what happened, never about timing."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from conftest import load_rgb

from edgeblur.build import build_anonymizer, build_detector, cadence, check_settings
from edgeblur.config import CameraConfig, JobConfig
from edgeblur.core.detect import _input_wh
from edgeblur.core.step import Checker, Plan, Planner
from edgeblur.io.preview import PreviewHub, PreviewSink
from edgeblur.io.source import Source, SourceSettings
from edgeblur.live.metrics import Metrics
from edgeblur.live.publisher import GuardedSinks, Publisher, Work
from edgeblur.live.service import InferenceWorker
from edgeblur.models.ops import box_iou
from edgeblur.secrets import SecretUrl
from edgeblur.types import Detections, Frame, Kind


def camera(name: str, **sections) -> CameraConfig:
    return CameraConfig.model_validate({"name": name, "url": "/dev/null", **sections})


class Rig:
    """One camera's publisher with a real preview sink, for calling ``handle`` directly."""

    def __init__(self, cam: CameraConfig):
        self.metrics = Metrics()
        self.hub = PreviewHub()
        m = self.metrics.camera(cam.name)
        # max_fps high, so every published frame reaches the hub.
        sinks = GuardedSinks(cam.name, [PreviewSink(self.hub, cam.name, max_fps=1e6)], m)
        checker = Checker(list(cadence(cam.detect)), check_settings(cam.track, cam.fail_closed))
        self.pub = Publisher(cam, checker, build_anonymizer(cam.anonymize), sinks, m, self.metrics)
        self.planner = Planner(cadence(cam.detect), cuts=False)

    def count(self, result: str) -> float:
        return self.metrics.registry.get_sample_value(
            "edgeblur_frames_total", {"camera": self.pub.name, "result": result}
        )

    def send(self, frame: Frame, found: Detections | None, failed: bool = False) -> Work:
        plan = self.planner.plan(frame.index, frame.image)
        work = Work(frame, plan, found if plan.due else None, failed=failed and bool(plan.due))
        self.pub.handle(work)
        return work

    def preview(self) -> np.ndarray | None:
        latest = self.hub.latest(self.pub.name)
        if latest is None:
            return None
        return cv2.imdecode(np.frombuffer(latest[1], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


FACE = np.array([[40, 30, 100, 100]], np.float32)


def textured(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (144, 176, 3), np.uint8)


def face_at(box: np.ndarray = FACE) -> Detections:
    return Detections(box, np.array([0.9], np.float32), np.array([Kind.FACE], np.uint8))


def test_publisher_hides_a_detected_face_and_counts_it_published():
    rig = Rig(camera("cam", detect={"plates": {"enabled": False}}))
    image = textured()
    now = time.monotonic()
    rig.send(Frame("cam", 0, image.copy(), t_decoded=now), face_at())
    assert rig.count("published") == 1
    out = rig.preview()
    assert out is not None
    x1, y1, x2, y2 = FACE[0].astype(int)
    inside = np.abs(
        out[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10].astype(int)
        - image[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10]
    )
    assert inside.mean() > 20  # blurred noise is far from the original noise
    assert rig.pub.checker.tracker.active_tracks == 1


def test_publisher_refuses_failed_unchecked_and_late_frames():
    rig = Rig(
        camera(
            "cam",
            detect={"plates": {"enabled": False}, "stride": 5},
            fail_closed={"max_unchecked_ms": 100, "max_latency_ms": 1000},
        )
    )
    now = time.monotonic()
    rig.send(Frame("cam", 0, textured(), t_decoded=now), None, failed=True)
    assert rig.count("dropped_error") == 1
    # Frame 1 is not due (stride 5) and no role ever detected: unchecked.
    rig.send(Frame("cam", 1, textured(), t_decoded=now), None)
    assert rig.count("dropped_unchecked") == 1
    # Frame 5 is due and detected, frame 6 rides on it (tracked), frame 7 is 0.2 s later: stale.
    rig.send(Frame("cam", 5, textured(), t_decoded=now), face_at())
    rig.send(Frame("cam", 6, textured(), t_decoded=now + 0.05), None)
    assert rig.count("published") == 2
    rig.send(Frame("cam", 7, textured(), t_decoded=now + 0.2), None)
    assert rig.count("dropped_unchecked") == 2
    # Older than max_latency_ms when it would be published: late, whatever was detected.
    rig.send(Frame("cam", 10, textured(), t_decoded=time.monotonic() - 5.0), face_at())
    assert rig.count("dropped_late") == 1
    assert rig.count("published") == 2
    assert (
        rig.metrics.registry.get_sample_value(
            "edgeblur_unchecked_frames_published_total", {"camera": "cam"}
        )
        == 0
    )


def test_blur_frame_policy_hides_a_refused_frame_whole():
    rig = Rig(
        camera("cam", detect={"plates": {"enabled": False}}, fail_closed={"policy": "blur_frame"})
    )
    image = textured()
    rig.send(Frame("cam", 0, image.copy(), t_decoded=time.monotonic()), None, failed=True)
    assert rig.count("blurred_whole") == 1 and rig.count("published") == 0
    out = rig.preview()
    assert out is not None and np.abs(out.astype(int) - image).mean() > 20


@pytest.fixture(scope="module")
def detector(models):
    cfg = JobConfig()
    return build_detector(cfg.detect, cfg.runtime)


def worker_rig(detector, cams: list[CameraConfig]):
    metrics = Metrics()
    members = []
    for cam in cams:
        source = Source(cam.name, SourceSettings(url=SecretUrl("/dev/null")))
        checker = Checker(list(cadence(cam.detect)), check_settings(cam.track, cam.fail_closed))
        m = metrics.camera(cam.name)
        sinks = GuardedSinks(cam.name, [], m)
        pub = Publisher(cam, checker, build_anonymizer(cam.anonymize), sinks, m, metrics)
        members.append((source, pub))
    worker = InferenceWorker(
        "g", detector, members, 8, 10, metrics, cadence=cadence(cams[0].detect)
    )
    return worker, members


def drain(pub: Publisher) -> list[Work]:
    out = []
    while not pub.queue.empty():
        out.append(pub.queue.get_nowait())
    return out


def test_worker_routes_each_frame_to_its_camera_in_order_with_only_due_roles_run(
    detector, media_dir
):
    cams = [camera(n, detect={"plates": {"stride": 4}}) for n in ("a", "b")]
    worker, members = worker_rig(detector, cams)
    zidane = load_rgb(media_dir / "zidane.jpg")
    small = cv2.resize(zidane, (200, 112), interpolation=cv2.INTER_AREA)
    (_sa, pa), (_sb, pb) = members
    calls: list[tuple[tuple[int, int], list[tuple[int, int]]]] = []
    for _spec, model, _runtime in worker.detector._pairs:
        real = model.preprocess

        def spy(images, real=real, model=model):
            inputs, meta = real(images)
            wh = next(iter(inputs.values())).shape[3:1:-1]
            calls.append((wh, [_input_wh(model, im) for im in images]))
            return inputs, meta

        model.preprocess = spy
    now = time.monotonic()
    for i in range(2):
        worker.step(
            [(Frame("a", i, zidane, t_decoded=now), pa), (Frame("b", i, small, t_decoded=now), pb)]
        )
    a, b = drain(pa), drain(pb)
    assert [w.frame.index for w in a] == [0, 1] and [w.frame.camera for w in a] == ["a", "a"]
    assert [w.frame.index for w in b] == [0, 1] and [w.frame.camera for w in b] == ["b", "b"]
    assert a[0].plan.due == {"face", "plate"} and a[1].plan.due == {"face"}
    for w in (*a, *b):
        assert w.detections is not None and not w.failed
        assert Kind.FACE in set(w.detections.kind.tolist())  # Zidane's faces, at both sizes
    # The two cameras need different input sizes: each image ran in a call of its own size, so
    # the small frame was never letterboxed into the large frame's input.
    assert len({wh for wh, _ in calls}) >= 2
    for wh, own in calls:
        assert all(tuple(o) == tuple(wh) for o in own), (wh, own)


def test_worker_marks_every_due_frame_of_a_failed_batch_failed(detector, media_dir, monkeypatch):
    cams = [camera("a", detect={"stride": 2, "plates": {"enabled": False}})]
    worker, members = worker_rig(detector, cams)
    (_s, pub) = members[0]

    def broken(images, plans=None):
        raise RuntimeError("injected inference fault")

    monkeypatch.setattr(worker.detector, "detect", broken)
    image = load_rgb(media_dir / "zidane.jpg")
    now = time.monotonic()
    worker.step(
        [(Frame("a", 0, image, t_decoded=now), pub), (Frame("a", 1, image, t_decoded=now), pub)]
    )
    due, skipped = drain(pub)
    assert due.failed and due.detections is None
    assert not skipped.failed and not skipped.plan.due  # not due: nothing to fail
    assert "injected inference fault" in (worker.last_error or "")
    for w in (due, skipped):
        pub.handle(w)
    published = worker.metrics.registry.get_sample_value(
        "edgeblur_frames_total", {"camera": "a", "result": "published"}
    )
    assert published == 0  # neither frame may be published


def test_a_plan_width_runs_the_role_at_that_input_size(detector, media_dir):
    # detect.auto's last rung runs plates at 640 instead of 1280: same network and runtime, the
    # frame letterboxed to the narrower input, boxes still in frame pixels.
    image = load_rgb(media_dir / "alpr_test.jpg")
    full = Plan(0, frozenset({"plate"}))
    narrow = Plan(0, frozenset({"plate"}), widths={"plate": 640})
    sizes: list[int] = []
    _spec, plate_model, runtime = next(p for p in detector._pairs if p[0].role == "plate")
    real_run = runtime.run

    def spy(inputs, real_run=real_run):
        sizes.append(next(iter(inputs.values())).shape[3])
        return real_run(inputs)

    runtime.run = spy
    try:
        (wide,) = detector.detect([image], [full])
        (small,) = detector.detect([image], [narrow])
    finally:
        runtime.run = real_run
    assert sizes == [1280, 640]
    assert plate_model.settings.input_width == 1280  # the role's own model is unchanged
    assert len(wide) and len(small), "the test image's plate is large enough for both widths"
    assert box_iou(small.xyxy[:1], wide.xyxy).max() > 0.5
