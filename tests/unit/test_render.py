from __future__ import annotations

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.models.render import SceneRenderer, make_look


def test_scenes_are_reproducible_and_labelled(catalog: Catalog) -> None:
    renderer = SceneRenderer(catalog)
    a, boxes_a = renderer.render(np.random.default_rng(1), 0, "BEV-COLA-330", ["PAN-TUNA-160"])
    b, boxes_b = renderer.render(np.random.default_rng(1), 0, "BEV-COLA-330", ["PAN-TUNA-160"])
    assert np.array_equal(a, b) and boxes_a == boxes_b
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    assert {x.sku for x in boxes_a} <= {"BEV-COLA-330", "PAN-TUNA-160"}
    assert any(x.in_hand and x.sku == "BEV-COLA-330" for x in boxes_a)
    for box in boxes_a:
        assert 0 <= box.x0 < box.x1 <= 1 and 0 <= box.y0 < box.y1 <= 1


def test_empty_scene_has_no_boxes(catalog: Catalog) -> None:
    _, boxes = SceneRenderer(catalog).render(np.random.default_rng(2), 1, None, [])
    assert boxes == []


def test_look_alikes_share_a_look_but_are_not_identical(catalog: Catalog) -> None:
    cola, zero = make_look(catalog["BEV-COLA-330"]), make_look(catalog["BEV-COLA-ZERO-330"])
    assert cola.sprite.shape == zero.sprite.shape  # same can
    assert not np.array_equal(cola.sprite, zero.sprite)
    big, small = make_look(catalog["PAN-FLAKES-750"]), make_look(catalog["PAN-FLAKES-375"])
    assert big.sprite.shape[0] > small.sprite.shape[0]  # same pack, other size
