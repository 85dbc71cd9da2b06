"""Tests for ranker.tasks.datasets on the real datasets, the shipped demo folder and small synthetic edge cases."""

import gzip
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ranker.tasks import datasets as ds
from ranker.tasks import loaders
from ranker.tasks.datasets import DatasetError, Task

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"

# name -> (samples, image shape, samples per class)
EXPECTED = {
    "fashion_mnist": (10000, (28, 28), [1000] * 10),
    "animal_mnist": (10000, (28, 28), [1000] * 10),
    "digits": (1797, (8, 8), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    "lfw_subset": (200, (25, 25), [100, 100]),
}


@pytest.fixture(scope="module")
def fashion() -> Task:
    return loaders.fashion_mnist("test")


def make_task(labels: list[int], names: tuple[str, ...] | None = None, task_id: str = "synthetic") -> Task:
    """In-memory task whose image i is filled with the value i, so samples can be traced through subsets."""
    labels = np.array(labels)
    images = np.broadcast_to(np.arange(len(labels), dtype=np.uint8)[:, None, None], (len(labels), 4, 4)).copy()
    names = names or tuple(f"c{c}" for c in range(labels.max() + 1))
    return Task(id=task_id, labels=labels, class_names=names, images=images)


def write_png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8)).save(path)


@pytest.mark.parametrize("name", EXPECTED)
def test_real_loader_shapes_and_classes(name):
    task = loaders.REAL_DATASETS[name]()
    n, shape, per_class = EXPECTED[name]
    assert len(task) == n
    assert task.images.shape == (n, *shape) and task.images.dtype == np.uint8
    assert task.labels.dtype == np.int64
    assert task.num_classes == len(per_class) == len(task.class_names)
    assert np.bincount(task.labels).tolist() == per_class
    assert task.images.max() >= 250  # scaled to 0..255, not left at 0..1 or 0..16
    assert task.image(0).mode == "RGB" and task.image(0).size == shape[::-1]


@pytest.mark.parametrize("name", EXPECTED)
def test_real_loader_is_deterministic(name):
    first, second = loaders.REAL_DATASETS[name](), loaders.REAL_DATASETS[name]()
    assert first.id == second.id == loaders.load_dataset(name).id
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_real_loader_ids_and_names(fashion):
    assert fashion.id == "fashion_mnist:test"
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert loaders.animal_mnist().class_names == ("Bear", "Bird", "Cat", "Cow", "Dog",
                                             "Elephant", "Giraffe", "Horse", "Sheep", "Zebra")
    assert loaders.digits().class_names == tuple("0123456789")
    lfw = loaders.lfw_subset()
    assert lfw.class_names == ("face", "non_face") and lfw.labels[:100].sum() == 0 and lfw.labels[100:].all()


def test_fashion_mnist_train_split():
    train = loaders.fashion_mnist("train")
    assert train.id == "fashion_mnist:train" and train.images.shape == (60000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10


def test_fashion_mnist_missing_files_explains_install(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        loaders.fashion_mnist()
    with pytest.raises(ValueError, match="'train' or 'test'"):
        loaders.fashion_mnist("val")


def test_fashion_mnist_rejects_truncated_idx_file(tmp_path, monkeypatch):
    sizes = b"".join(n.to_bytes(4, "big") for n in (2, 28, 28))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + sizes + bytes(2 * 784)))
    truncated = b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + bytes(1)  # header promises 2 labels, holds 1
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(truncated))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="not a complete idx file"):
        loaders.fashion_mnist()


def test_episode_is_deterministic_and_reindexed(fashion):
    episode = ds.sample_episode(fashion, ways=5, shots=3, seed=1)
    again = ds.sample_episode(fashion, ways=5, shots=3, seed=1)
    assert episode.id == again.id == "fashion_mnist:test/w5s3-seed1"
    np.testing.assert_array_equal(episode.images, again.images)
    assert len(episode) == 15 and episode.num_classes == 5
    assert episode.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    parent_ids = [fashion.class_names.index(name) for name in episode.class_names]
    assert parent_ids == sorted(parent_ids)
    for image, label in zip(episode.images, episode.labels, strict=True):  # each image really belongs to its class
        matches = np.flatnonzero((fashion.images == image).all(axis=(1, 2)))
        assert parent_ids[label] in fashion.labels[matches]


def test_episode_seeds_differ(fashion):
    a, b = ds.sample_episode(fashion, 5, 3, seed=0), ds.sample_episode(fashion, 5, 3, seed=2)
    assert a.id != b.id
    assert not np.array_equal(a.images, b.images)


def test_episode_errors():
    lfw = loaders.lfw_subset()
    with pytest.raises(DatasetError, match="'face'.*only 100 samples"):
        ds.sample_episode(lfw, ways=2, shots=101, seed=0)
    with pytest.raises(DatasetError, match="3-way episode"):
        ds.sample_episode(lfw, ways=3, shots=1, seed=0)


def test_subset_reindexes_in_sorted_class_order():
    digits = loaders.digits()
    picks = [*np.flatnonzero(digits.labels == 7)[:2], *np.flatnonzero(digits.labels == 3)[:3]]
    sub = digits.subset(picks, "mine")
    assert sub.id == "sklearn_digits:all/mine"
    assert sub.class_names == ("3", "7") and sub.labels.tolist() == [1, 1, 0, 0, 0]
    np.testing.assert_array_equal(sub.images, digits.images[picks])


def test_split_is_stratified_disjoint_and_deterministic():
    task = make_task([0] * 10 + [1] * 7 + [2] * 3)
    train, test = ds.split(task, test_fraction=0.3, seed=4)
    assert (train.id, test.id) == ("synthetic/train0.3-seed4", "synthetic/test0.3-seed4")
    assert np.bincount(test.labels).tolist() == [3, 2, 1] and np.bincount(train.labels).tolist() == [7, 5, 2]
    train_ids, test_ids = set(train.images[:, 0, 0]), set(test.images[:, 0, 0])
    assert not train_ids & test_ids and len(train_ids | test_ids) == len(task)
    np.testing.assert_array_equal(ds.split(task, 0.3, seed=4)[1].images, test.images)
    assert set(ds.split(task, 0.3, seed=5)[1].images[:, 0, 0]) != test_ids
    assert ds.split(task, 0.5, seed=4)[1].id != test.id


def test_split_needs_two_samples_per_class():
    with pytest.raises(DatasetError, match="'c1'.*single sample"):
        ds.split(make_task([0, 0, 1]), 0.5, seed=0)


def test_split_on_real_data_keeps_every_class():
    train, test = ds.split(loaders.digits(), 0.2, seed=0)
    assert train.num_classes == test.num_classes == 10 and len(train) + len(test) == 1797


def test_variants_change_pixels_and_id():
    lfw = loaders.lfw_subset()
    inverted = ds.variant(lfw, "invert")
    np.testing.assert_array_equal(inverted.images.astype(int), 255 - lfw.images.astype(int))
    rotated = ds.variant(lfw, "rot90")
    np.testing.assert_array_equal(rotated.images[0], np.rot90(lfw.images[0]))
    lowres = ds.variant(lfw, "lowres")
    assert lowres.images.shape == lfw.images.shape
    assert (lowres.images[:, :4, :4] == lowres.images[:, :1, :1]).all()  # 4x4 blocks of one value
    for name, changed in (("invert", inverted), ("rot90", rotated), ("lowres", lowres)):
        assert changed.id == f"lfw_subset:all/{name}"
        assert not np.array_equal(changed.images, lfw.images)
        np.testing.assert_array_equal(changed.labels, lfw.labels)
    with pytest.raises(ValueError, match="invert, grey, rot90, lowres"):
        ds.variant(lfw, "blur")


def test_grey_variant_is_pils_luma_in_three_channels():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    task = Task(id="rgb", labels=np.array([0, 1, 1]), class_names=("a", "b"), images=rgb)
    grey = ds.variant(task, "grey")
    assert grey.id == "rgb/grey" and grey.images.shape == rgb.shape
    luma = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in rgb])
    assert np.abs(grey.images[..., 0].astype(int) - luma).max() <= 1  # PIL rounds in fixed point
    assert (grey.images[..., 0] == grey.images[..., 2]).all()
    lfw = loaders.lfw_subset()
    assert np.array_equal(ds.variant(lfw, "grey").images, lfw.images)  # grey images stay as they are


def test_variant_of_image_folder_loads_pixels():
    demo = loaders.load_image_folder(DEMO_DIR)
    inverted = ds.variant(demo, "invert")
    assert inverted.paths is None and inverted.images.shape == (250, 28, 28, 3)
    np.testing.assert_array_equal(inverted.images[3], 255 - np.asarray(demo.image(3)))


def test_demo_image_folder():
    demo = loaders.load_dataset(str(DEMO_DIR))
    assert demo.class_names == ("ankle_boot", "bag", "pullover", "sandal", "trouser")
    assert len(demo) == 250 and np.bincount(demo.labels).tolist() == [50] * 5
    assert demo.id.startswith("folder:demo:") and demo.id == loaders.load_image_folder(DEMO_DIR).id
    image = demo.image(0)
    assert image.mode == "RGB" and image.size == (28, 28)
    assert demo.paths[0].parent.name == demo.class_names[demo.labels[0]]


def test_image_folder_id_changes_with_files(tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, copy)
    before = loaders.load_image_folder(copy)
    write_png(copy / "bag" / "extra.png")
    after = loaders.load_image_folder(copy)
    assert len(after) == 251 and after.id != before.id and after.id.startswith("folder:demo:")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, "does not exist"),
        ([], "no .png/.jpg/.jpeg images"),
        (["cat/a.png", "cat/b.png"], "only one class \\('cat'\\)"),
        (["cat/a.png", "dog/b.png", "loose.png"], "directly inside it"),
    ],
)
def test_image_folder_layout_errors(tmp_path, layout, message):
    root = tmp_path / "images"
    if layout is not None:
        root.mkdir()
        for name in layout:
            write_png(root / name)
    with pytest.raises(DatasetError, match=message):
        loaders.load_image_folder(root)


def test_image_folder_unreadable_file(tmp_path):
    for name in ("cat/a.png", "dog/b.png"):
        write_png(tmp_path / name)
    (tmp_path / "dog" / "broken.png").write_bytes(os.urandom(64))
    with pytest.raises(DatasetError, match=r"1 unreadable image file\(s\): .*broken\.png"):
        loaders.load_image_folder(tmp_path)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 5, 5, 3), dtype=np.uint8), np.array([0, 1, 2, 2, 1, 0])
    path = tmp_path / "toy.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c"]))
    task = loaders.load_dataset(str(path))
    assert task.id.startswith("npz:toy:") and task.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(task.images, images)
    np.testing.assert_array_equal(task.labels, labels)
    assert np.array_equal(np.asarray(task.image(2)), images[2])
    np.savez(path, images=images, labels=labels[::-1])
    relabelled = loaders.load_npz(path)
    assert relabelled.id != task.id and relabelled.class_names == ("0", "1", "2")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.zeros((4, 3)), "labels": np.array([0, 1, 0, 1])}, "precomputed features"),
        ({"images": np.zeros((4, 2, 2), np.uint8)}, "no 'labels' array"),
        ({"pixels": np.zeros((4, 2, 2), np.uint8)}, "no 'images' array"),
        ({"images": np.zeros((4, 2, 2)), "labels": np.array([0, 1, 0, 1])}, "convert them to uint8"),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        loaders.load_npz(tmp_path / "bad.npz")


def test_load_dataset_unknown_lists_names():
    with pytest.raises(DatasetError, match="fashion_mnist, animal_mnist, digits, lfw_subset"):
        loaders.load_dataset("imagenet")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": np.zeros(3, int), "class_names": ("cat",)}, "only one class \\('cat'\\)"),
        ({"labels": np.array([0, 1]), "class_names": ("a", "b")}, "3 images but 2 labels"),
        ({"labels": np.array([0.0, 1.0, 1.0]), "class_names": ("a", "b")}, "1-D integer"),
        ({"labels": np.array([0, 0, 0]), "class_names": ("a", "b")}, "no samples of class\\(es\\) \\['b'\\]"),
        ({"labels": np.array([0, 1, 2]), "class_names": ("a", "b")}, "outside 0..1"),
        ({"labels": np.array([0, 1, 1]), "class_names": ("a", "b"), "paths": (Path("x"),) * 3}, "exactly one"),
    ],
)
def test_task_validation(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        Task(id="bad", images=np.zeros((3, 2, 2), np.uint8), **kwargs)


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.gz"
    with gzip.open(evil, "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(pickle.UnpicklingError, match="refusing global (posix|nt|os).system"):
        loaders._load_pickled_array(evil, np.uint8, ndim=1)
    assert not marker.exists()


def test_restricted_unpickler_loads_plain_arrays(tmp_path):
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    path = tmp_path / "array.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(array, f)
    np.testing.assert_array_equal(loaders._load_pickled_array(path, np.int64, ndim=2), array)
    with pytest.raises(DatasetError, match="does not hold a 2-D uint8 array"):
        loaders._load_pickled_array(path, np.uint8, ndim=2)


def test_images_nested_below_a_class_folder_belong_to_that_class(tmp_path: Path) -> None:
    for rel in ("cat/a.png", "cat/kitten/sub/b.png", "dog/c.png", "dog/puppy/d.png"):
        write_png(tmp_path / rel)
    task = loaders.load_image_folder(tmp_path)
    assert task.class_names == ("cat", "dog") and task.labels.tolist() == [0, 0, 1, 1]


def test_a_symlink_loop_is_refused_and_a_link_elsewhere_is_followed(tmp_path: Path) -> None:
    for rel in ("data/cat/a.png", "data/dog/c.png", "elsewhere/b.png"):
        write_png(tmp_path / rel)
    (tmp_path / "data" / "cat" / "more").symlink_to(tmp_path / "elsewhere")
    assert loaders.load_image_folder(tmp_path / "data").labels.tolist() == [0, 0, 1]
    (tmp_path / "data" / "dog" / "loop").symlink_to(tmp_path / "data" / "dog")
    with pytest.raises(DatasetError, match="a loop"):
        loaders.load_image_folder(tmp_path / "data")


def test_string_labels_in_an_npz_are_class_names(tmp_path: Path) -> None:
    images = np.zeros((4, 8, 8), np.uint8)
    np.savez(tmp_path / "s.npz", images=images, labels=np.array(["dog", "cat", "dog", "cat"]))
    task = loaders.load_npz(tmp_path / "s.npz")
    assert task.class_names == ("cat", "dog") and task.labels.tolist() == [1, 0, 1, 0]
    np.savez(tmp_path / "f.npz", features=np.ones((4, 3)), labels=np.array(["b", "a", "b", "a"]))
    assert loaders.load_features_npz(tmp_path / "f.npz")[2].tolist() == [1, 0, 1, 0]


def test_episode_at_most_keeps_short_classes_whole_and_others_drawn_as_usual():
    task = make_task([0] * 5 + [1] * 2 + [2] * 5)
    capped = ds.sample_episode(task, ways=3, shots=3, seed=0, at_most=True)
    assert np.bincount(capped.labels).tolist() == [3, 2, 3] and capped.id == "synthetic/w3s3max-seed0"
    balanced = make_task([0] * 5 + [1] * 5 + [2] * 5)
    full = ds.sample_episode(balanced, ways=3, shots=3, seed=0, at_most=True)
    assert full.id == "synthetic/w3s3-seed0"  # no class short: the plain episode, id included
    np.testing.assert_array_equal(full.images, ds.sample_episode(balanced, 3, 3, 0).images)


def _clip_art_tree(root: Path) -> None:
    """Two classes of 20 RGBA drawings (transparent but for a red dot), below the loader's rules' traps."""
    for folder in ("animals/birds", "food/fruit/apples"):
        for i in range(loaders.OPENCLIPART_MIN_IMAGES):
            rgba = np.zeros((10, 20, 4), np.uint8)
            rgba[4:6, 9:11] = (255, 0, 0, 255)
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgba).save(root / folder / f"{i}.png")
    (root / "food/fruit/link.png").symlink_to(root / "animals/birds/0.png")  # the package's duplicates are links
    for i in range(loaders.OPENCLIPART_MIN_IMAGES):  # loose files of a top-level category: its "misc", no class
        write_png(root / "animals" / f"loose{i}.png")
    for i in range(loaders.OPENCLIPART_MIN_IMAGES - 1):  # one image short of a class
        write_png(root / "food/veg" / f"{i}.png")
    Image.new("L", (5000, 4000)).save(root / "animals/birds/poster.png")  # 20 MP: skipped, never decoded


def test_openclipart_classes_pixels_and_rules(tmp_path, monkeypatch):
    _clip_art_tree(tmp_path)
    monkeypatch.setenv("OPENCLIPART_DIR", str(tmp_path))
    task = loaders.load_dataset("openclipart")
    assert task.class_names == ("animals/birds", "food/fruit/apples")
    assert np.bincount(task.labels).tolist() == [20, 20] and task.id.startswith("openclipart:2c40-")
    size = loaders.OPENCLIPART_SIZE
    assert task.images.shape == (40, size, size, 3)
    image = task.images[0].astype(int)
    assert (image[0, 0] == 255).all() and (image[size // 2, size // 2] == (255, 0, 0)).all()  # white around red
    assert (image[size // 4 - 5] == 255).all()  # a 2:1 drawing is centred: white above it
    write_png(tmp_path / "animals/birds/3.png", 9)  # another drawing under the same name: another id (cache key)
    assert loaders.openclipart().id != task.id


def test_openclipart_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCLIPART_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="apt-get install openclipart-png"):
        loaders.openclipart()


def test_tuxpaint_classes_are_second_level_folders_or_a_whole_thin_category(tmp_path, monkeypatch):
    n = loaders.MIN_CLASS_IMAGES
    for folder, count in (("animals/mammals/apes", 4), ("animals/mammals/cats", n - 4), ("animals/fish", 3),
                          ("vehicles/auto", 4), ("vehicles/ship", n - 4), ("symbols", 2)):
        for i in range(count):
            write_png(tmp_path / folder / f"{i}.png")
    write_png(tmp_path / "vehicles/auto/0_mirror.png")  # Tux Paint's mirrored duplicate
    monkeypatch.setenv("TUXPAINT_DIR", str(tmp_path))
    task = loaders.load_dataset("tuxpaint")
    # mammals gathers its small sub-folders; fish (3) is dropped; vehicles has no big sub-folder, so it is one class
    assert task.class_names == ("animals/mammals", "vehicles")
    assert np.bincount(task.labels).tolist() == [n, n]
    assert task.images.shape[1:] == (loaders.TUXPAINT_SIZE, loaders.TUXPAINT_SIZE, 3)


def test_tuxpaint_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TUXPAINT_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="apt-get install tuxpaint-stamps-default"):
        loaders.tuxpaint()


def test_openmoji_renders_colour_emoji_by_subgroup():
    task = loaders.load_dataset("openmoji")
    counts = dict(zip(task.class_names, np.bincount(task.labels).tolist(), strict=True))
    assert counts["animal-mammal"] >= 60 and counts["food-fruit"] >= 15 and min(counts.values()) >= 10
    assert task.images.shape[1:] == (loaders.OPENMOJI_SIZE, loaders.OPENMOJI_SIZE, 3)
    ink = task.images.reshape(len(task), -1, 3).astype(int)
    colourful = (ink.max(2) - ink.min(2) > 60).mean(1)  # share of strongly coloured pixels per emoji
    assert np.median(colourful) > 0.1  # rendered from the colour layers, not as black outlines
    assert len({img.tobytes() for img in task.images}) > 0.95 * len(task)


def test_openmoji_without_the_emoji_list_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOJI_TEST", str(tmp_path / "none.txt"))
    with pytest.raises(DatasetError, match="unicode-data"):
        loaders.openmoji()


def test_transparent_pixels_of_a_folder_image_are_white_and_pil_stays_quiet(tmp_path: Path) -> None:
    """Clip art in a user's folder: palette PNGs with a transparent colour (PIL warned on each) and RGBA PNGs."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # colour 0 red, colour 1 blue
    palette.putpixel((0, 0), 0)
    palette.info["transparency"] = b"\x00\xff"  # colour 0 transparent, as bytes: what PIL warned about
    palette.save(tmp_path / "a" / "p.png", transparency=b"\x00\xff")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1], rgba[1:, :, 3] = 200, 255  # green, its first row transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b" / "q.png")
    task = loaders.load_image_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p, q = (np.asarray(task.image(i)) for i in range(2))
    assert p[0, 0].tolist() == [255, 255, 255] and p[1, 1].tolist() == [0, 0, 255]
    assert (q[0] == 255).all() and q[1, 0].tolist() == [0, 200, 0]
