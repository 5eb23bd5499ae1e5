"""Class tables for the Debian ``openclipart-png`` clip art and a guarded image opener.

Openclipart labels come from folder names and, for animals, from words in the file name
(English, and Italian such as gatto or cavallo, which many file names use). Labels are
noisy: the tables below were checked by listing the matched file names.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from clipood.data.benchmarks import styles

# Images with more pixels than this are skipped and recorded in the manifest.
# openclipart-png 1:0.18+dfsg-19 contains nine PNGs of 168 to 623 megapixels, which trip
# Pillow's decompression-bomb guard.
MAX_PIXELS = 40_000_000

# Nameable folder classes: class name -> folders under png/ (files directly in the folder).
FOLDER_CLASSES: dict[str, tuple[str, ...]] = {
    "arrow": ("shapes/arrows",),
    "bird": ("animals/birds",),
    "boat": ("transportation/boating",),
    "book": ("education/books",),
    "bread": ("food/breads_and_carbs",),
    "clock": ("signs_and_symbols/clocks",),
    "dessert": ("food/desserts",),
    "dinosaur": ("animals/dinosaurs",),
    "drink": ("food/beverages",),
    "fish": ("animals/fish",),
    "flag": ("signs_and_symbols/flags/africa", "signs_and_symbols/flags/asia"),
    "flower": ("plants/flowers",),
    "fruit": ("food/fruit",),
    "hat": ("people/clothing/hats",),
    "house": ("buildings/homes",),
    "insect": ("animals/bugs",),
    "jigsaw puzzle piece": ("shapes/jigsaw",),
    "map": ("geography",),
    "meat": ("food/meats_and_eggs",),
    "musical instrument": ("recreation/music",),
    "pattern": ("special/patterns",),
    "playing card": ("recreation/games/cards/simple",),
    "road sign": ("transportation/roadsigns",),
    "smiley face": ("people/smilies",),
    "speech bubble": ("shapes/callouts",),
    "sports equipment": ("recreation/sports",),
    "star": ("shapes/stars",),
    "stick figure": ("people/stickmen",),
    "tool": ("tools",),
    "toy": ("recreation/toys",),
    "weapon": ("tools/weapons",),
    "weather symbol": ("signs_and_symbols/weather",),
}

# Further folder classes for offline-wild only, so offline-base-new keeps its class list.
# Checked by eye: animals/mammals contains single mammals (its bear, cat, dog and horse
# subfolders are not read), and signs_and_symbols/led contains glossy round and square
# buttons.
WILD_EXTRA_CLASSES: dict[str, tuple[str, ...]] = {
    "body part": ("people/bodypart",),
    "computer hardware": ("computer/hardware",),
    "flowchart shape": ("shapes/flowchart",),
    "glossy button": ("signs_and_symbols/led",),
    "mammal": ("animals/mammals",),
    "pictogram": ("signs_and_symbols/map_symbols",),
}
WILD_CLASSES: dict[str, tuple[str, ...]] = {**FOLDER_CLASSES, **WILD_EXTRA_CLASSES}

# Animal classes shared with animal-mnist: folders whose every file is that animal, and
# whole words of file names in the animal folders. Names that match a word but show
# something else (a grasshopper "cavalletta", a lizard "ramarro") do not match because only
# whole words count.
ANIMAL_FOLDERS = {
    "animals/mammals/bears": "bear",
    "animals/mammals/housecats": "cat",
    "animals/mammals/dogs": "dog",
    "animals/mammals/horses": "horse",
}
ANIMAL_WORDS: dict[str, frozenset[str]] = {
    "bear": frozenset({"bear", "bears", "orso", "ours"}),
    "bird": frozenset(
        {
            "bird",
            "birds",
            "duck",
            "anatra",
            "colombo",
            "dove",
            "eagle",
            "aquila",
            "acquila",
            "gabbiano",
            "gull",
            "owl",
            "gufo",
            "civetta",
            "penguin",
            "pinguino",
            "hen",
            "gallo",
            "pollo",
            "cigno",
            "cigni",
            "crow",
            "parrot",
            "puffin",
            "cormorant",
            "flamand",
        }
    ),
    "cat": frozenset({"cat", "cats", "kitten", "gatto", "gatti", "gattina"}),
    "cow": frozenset({"cow", "bull", "toro", "toros", "vacca", "mucca"}),
    "dog": frozenset({"dog", "dogs", "puppy", "beagle", "bulldog", "lab", "cane", "bobi"}),
    "elephant": frozenset({"elephant", "elefante", "elefantone"}),
    "giraffe": frozenset({"giraffe", "giraffa"}),
    "horse": frozenset({"horse", "cavallo"}),
    "sheep": frozenset({"sheep", "pecora", "pecorella"}),
    "zebra": frozenset({"zebra"}),
}
ANIMAL_SEARCH_FOLDERS = ("animals", "unsorted")
# Files whose name matches an animal word but whose picture shows something else.
ANIMAL_EXCLUDED_STEMS = frozenset({"giraffe_cichlid_01", "contour_bat", "set_gatti"})


@dataclass(frozen=True)
class ClipArtImage:
    """One openclipart file and the class name it was labelled with."""

    path: Path
    classname: str


def _png_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def list_folder_classes(
    png_root: Path,
    classes: dict[str, tuple[str, ...]] = FOLDER_CLASSES,
    visible_only: bool = False,
) -> dict[str, list[ClipArtImage]]:
    """List the files of each folder class; a class whose folders are missing is empty.

    With ``visible_only``, files that render nearly blank are left out before any
    sampling, so a capped class is filled with pictures that show something.
    """
    listed = {}
    for classname, folders in classes.items():
        files = [p for folder in folders for p in _png_files(png_root / folder)]
        if visible_only:
            files = [p for p in files if is_visible_source(p)]
        listed[classname] = [ClipArtImage(p, classname) for p in files]
    return listed


def is_visible_source(path: Path, size: int = 64) -> bool:
    """Tell whether ``path``, flattened on white at ``size`` pixels, is more than blank.

    A file that cannot be opened counts as visible, so the writer skips it later and
    records the reason in the manifest.
    """
    try:
        image = open_guarded(path)
    except ValueError:
        return True
    with image:
        rgba = styles.to_rgba(image)
    flat = styles.flatten(styles.fit_on_canvas(rgba, size))
    return styles.ink_fraction(flat) >= styles.MIN_INK_FRACTION


def _animal_of(path: Path, relative: Path) -> str | None:
    folder = relative.parent.as_posix()
    for prefix, animal in ANIMAL_FOLDERS.items():
        if folder == prefix or folder.startswith(prefix + "/"):
            return animal
    if path.stem in ANIMAL_EXCLUDED_STEMS:
        return None
    words = set(re.split(r"[^a-z]+", path.stem.lower()))
    matches = [animal for animal, names in ANIMAL_WORDS.items() if words & names]
    return matches[0] if len(matches) == 1 else None


def list_animals(png_root: Path) -> dict[str, list[ClipArtImage]]:
    """List the clip art of the animal-mnist classes; a file naming two animals is left out."""
    listed: dict[str, list[ClipArtImage]] = {animal: [] for animal in ANIMAL_WORDS}
    for top in ANIMAL_SEARCH_FOLDERS:
        folder = png_root / top
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.png")):
            animal = _animal_of(path, path.relative_to(png_root))
            if animal is not None:
                listed[animal].append(ClipArtImage(path, animal))
    return listed


def open_guarded(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open and decode an image, raising ``ValueError`` for one above ``max_pixels``.

    The size is read from the header before decoding, and Pillow's decompression-bomb
    warning and error become the same ``ValueError``, so a huge file is never decoded.
    ``max_pixels`` defaults to the module's ``MAX_PIXELS`` at call time.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
            if image.width * image.height > max_pixels:
                image.close()
                raise ValueError(
                    f"{image.width}x{image.height} pixels, above the limit of {max_pixels}"
                )
            image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
            raise ValueError(f"decompression-bomb guard: {err}") from err
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"cannot decode: {err}") from err
    return image
