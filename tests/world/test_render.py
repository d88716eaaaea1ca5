from PIL import Image

from dataengine.qtypes.geometry import contact, direction
from dataengine.records import ImageAnnotation, read_jsonl
from dataengine.world.render import COLORS, annotate, render_scene


def test_scenes_are_deterministic_and_annotated():
    a, fa = render_scene(42)
    b, _ = render_scene(42)
    assert a.tobytes() == b.tobytes()
    ann = annotate("x", "x.png", fa)
    assert ann.objects and ann.captions and ann.setting
    for o in ann.objects:
        x1, y1, x2, y2 = o.bbox
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96


def test_object_colors_are_drawn_where_the_box_says():
    # The centre pixel of a filled ball or box has the annotated colour.
    checked = 0
    for seed in range(300):
        img, facts = render_scene(seed)
        ann = annotate("x", "x.png", facts)
        for o in ann.objects:
            inner = [p for p in ann.objects if p.id != o.id and contact(p.bbox, o.bbox) in ("inside", "overlapping")]
            if o.name in ("ball", "box") and not inner:
                cx, cy = (o.bbox[0] + o.bbox[2]) / 2, (o.bbox[1] + o.bbox[3]) / 2
                assert img.getpixel((int(cx), int(cy))) == COLORS[o.attributes[0]]
                checked += 1
    assert checked > 50


def test_geometry_relations():
    left, right = (0, 0, 10, 10), (30, 2, 40, 12)
    assert direction(left, right) == "left of" and direction(right, left) == "right of"
    assert direction((0, 0, 10, 10), (2, 30, 12, 40)) == "above"
    assert contact((12, 12, 18, 18), (10, 10, 30, 30)) == "inside"
    assert contact((0, 0, 10, 10), (10.5, 0, 20, 10)) == "touching"
    assert contact((0, 0, 10, 10), (5, 0, 15, 10)) == "overlapping"
    assert contact((0, 0, 10, 10), (40, 0, 50, 10)) == "apart"


def test_world_files(world):
    pool = read_jsonl(world.pool, ImageAnnotation)
    assert len(pool) == 400
    with Image.open(world.image_root / pool[0].image) as im:
        assert im.size == (64, 64)


def test_a_world_folder_is_reused_only_for_its_own_config(world):
    import pytest

    from dataengine.errors import DataError
    from dataengine.world.build import build_world
    from tests.support.configs import small_config
    out = world.pool.parent
    assert build_world(small_config(), out) == world  # the same config: the files as they are
    with pytest.raises(DataError, match="holds a world made with another seed or world config"):
        build_world(small_config(seed=1), out)
    other = small_config()
    other.world.pool_size = 50
    with pytest.raises(DataError, match="another seed or world config"):
        build_world(other, out)


def test_a_file_where_the_world_folder_should_be_is_one_clear_error(tmp_path):
    import pytest

    from dataengine.errors import DataError
    from dataengine.world.build import build_world
    from tests.support.configs import small_config
    (tmp_path / "afile").write_text("mine\n")
    for out in (tmp_path / "afile", tmp_path / "afile" / "world"):
        with pytest.raises(DataError, match="cannot make the world's folder"):
            build_world(small_config(), out)
    assert (tmp_path / "afile").read_text() == "mine\n"  # nothing of the user's is touched
