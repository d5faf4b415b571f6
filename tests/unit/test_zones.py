"""Privacy zones in the Anonymizer: hide zones hidden on every frame whatever the detector says,
ignore zones drop the regions centred in them, masks rasterised once per frame size."""

from __future__ import annotations

import numpy as np
import pytest

from edgeblur.core.anonymize import Anonymizer, AnonymizeSettings, Method, Zone, ZoneKind
from edgeblur.types import Detections, Frame, Kind, Regions

W, H = 320, 240
NONE = Regions.from_detections(Detections.empty(), 0)


def noise(w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def face(xyxy: list[float]) -> Regions:
    dets = Detections(np.asarray([xyxy], np.float32), [0.9], [Kind.FACE])
    return Regions.from_detections(dets, 0)


def run(anonymizer: Anonymizer, image: np.ndarray, regions: Regions = NONE):
    out = image.copy()
    result = anonymizer.apply(Frame("cam", 0, out), regions)
    return out, result


HIDE_LEFT = Zone(ZoneKind.HIDE, ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))


@pytest.mark.parametrize("method", [Method.GAUSSIAN, Method.PIXELATE, Method.FILL])
def test_hide_zone_is_hidden_with_no_detection_and_nothing_else_changes(method) -> None:
    img = noise()
    out, _ = run(Anonymizer(AnonymizeSettings(method=method, zones=(HIDE_LEFT,))), img)
    changed = (out != img).any(axis=2)
    assert changed[:, : W // 2 - 1].mean() > 0.95  # noise: every smoothed pixel changes
    assert not changed[:, W // 2 + 1 :].any()


def test_triangle_zone_hides_its_inside_and_not_its_outside() -> None:
    tri = Zone("hide", ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    img = noise()
    out, _ = run(Anonymizer(AnonymizeSettings(method=Method.FILL, zones=(tri,))), img)
    black = (out == 0).all(axis=2)
    assert black[10, 10] and black[H // 2 - 10, W // 2 - 10]
    assert not black[H - 10, W - 10]


def test_zone_follows_a_change_of_resolution() -> None:
    anonymizer = Anonymizer(AnonymizeSettings(method=Method.FILL, zones=(HIDE_LEFT,)))
    for w, h in ((W, H), (2 * W, 2 * H), (W, H)):
        out, _ = run(anonymizer, noise(w, h))
        assert (out[:, : w // 2 - 1] == 0).all() and (out[:, w // 2 + 1 :] != 0).any()


def test_masks_are_rasterised_once_per_size() -> None:
    anonymizer = Anonymizer(AnonymizeSettings(zones=(HIDE_LEFT,)))
    first = anonymizer.zone_masks((W, H))
    run(anonymizer, noise())
    assert anonymizer.zone_masks((W, H)) is first


def test_ignore_zone_drops_regions_centred_inside_only() -> None:
    poster = Zone("ignore", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)))
    anonymizer = Anonymizer(AnonymizeSettings(method=Method.FILL, zones=(poster,)))
    img = noise()
    out, result = run(anonymizer, img, face([250, 100, 290, 140]))  # centre in the zone
    assert len(result.regions) == 0 and (out == img).all()
    out, result = run(anonymizer, img, face([20, 100, 60, 140]))  # centre outside
    assert len(result.regions) == 1 and (out[120, 40] == 0).all()


def test_hide_wins_over_ignore() -> None:
    both = (
        Zone("ignore", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))),
        HIDE_LEFT,
    )
    out, _ = run(Anonymizer(AnonymizeSettings(method=Method.FILL, zones=both)), noise())
    assert (out[:, : W // 2 - 1] == 0).all()


@pytest.mark.parametrize(
    "points", [((0, 0), (1, 1)), ((0, 0), (2, 0), (0, 1)), ((0, 0), (0.5, -0.1), (0, 1))]
)
def test_malformed_zone_is_refused(points) -> None:
    with pytest.raises(ValueError):
        Zone("hide", points)


def test_every_camera_gets_its_zones_and_ignore_zones_are_logged(tmp_path, caplog) -> None:
    import yaml

    from edgeblur.build import build_anonymizer
    from edgeblur.config import load_service_config

    zones = [
        {"kind": "hide", "points": [[0, 0], [0.5, 0], [0.5, 0.5]]},
        {"kind": "ignore", "points": [[0.5, 0.5], [1, 0.5], [1, 1]]},
    ]
    path = tmp_path / "cameras.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"anonymize": {"zones": zones}},
                "cameras": {"gate": {"url": "rtsp://127.0.0.1:8554/a"}},
            }
        )
    )
    cam = load_service_config(path, env={}).cameras[0]
    with caplog.at_level("WARNING"):
        anonymizer = build_anonymizer(cam.anonymize, cam.name)
    kinds = [z.kind for z in anonymizer.settings.zones]
    assert kinds == [ZoneKind.HIDE, ZoneKind.IGNORE]
    assert "gate: 1 ignore zone(s)" in caplog.text and "NOT hidden" in caplog.text


def test_hidden_mask_counts_hide_zones_and_leaves_out_ignored_regions() -> None:
    from edgeblur.core.anonymize import hidden_mask

    poster = Zone("ignore", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)))
    settings = AnonymizeSettings(zones=(HIDE_LEFT, poster))
    mask = hidden_mask(face([250, 100, 290, 140]), settings, (W, H))
    assert mask[:, : W // 2 - 1].all() and not mask[:, W // 2 + 1 :].any()


def test_preview_draws_zone_outlines_on_its_copy_only() -> None:
    import cv2

    from edgeblur.io.preview import PreviewHub, PreviewSink

    hub = PreviewHub()
    outline = (("hide", ((0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75))),)
    sink = PreviewSink(hub, "Gate.1", quality=95, outlines=outline)
    image = np.zeros((H, W, 3), np.uint8)
    sink.write(Anonymizer().apply(Frame("Gate.1", 0, image), NONE))
    assert not image.any()  # the frame the stream and file get is untouched
    jpeg = cv2.imdecode(np.frombuffer(hub.latest("Gate.1")[1], np.uint8), cv2.IMREAD_COLOR)
    b, g, r = jpeg[H // 4, W // 2].tolist()  # on the top edge: amber
    assert r > 200 and 120 < g < 230 and b < 80
    assert not jpeg[H // 2, W // 2].any() or jpeg[H // 2, W // 2].max() < 20  # inside: as it was
