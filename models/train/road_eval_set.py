#!/usr/bin/env python3
"""The road-scene evaluation set: real stills from sources the road-scene model never trains on.

Writes models/road-scene/eval/ from the downloads that fetch_road.sh leaves in ROAD_CACHE/dl:
  images/NAME.jpg   each still downscaled to <= 640 px on its long side (Pillow bicubic), JPEG q 85
  labels.csv        `vigil eval`'s label-list format (path,labels), labels restricted to the bundle's
  SOURCES.md        per image: package, file, licence, and the hand labels (all eight road labels)

The labels below were set by hand, by looking at every image at full size (not by a detector).
Rules: a label is present when at least part of one such object is visible and recognisable to a
person looking at the whole image, however small (the tiny pedestrians of scenetext03 and kite count).
Paintings and drawings of people are left out rather than labelled either way.

Training never reads these packages' images: ultralytics / yolov5 assets, Debian darknet's data
folder, node-opencv's example files, scikit-image's data folder, and opencv-doc's *stills*
(examples/data/*.jpg|png, examples/text, examples/hfs). vtest.avi (a video in opencv-doc's
examples/data) is trained on; no still here is a frame of it (other scenes, other cameras).

    python3 road_eval_set.py [--labels "person;car;..."]   # default: the eight road labels
"""

import argparse
import os
from pathlib import Path

from PIL import Image

CACHE = Path(os.environ.get("VIGIL_ROAD_CACHE", Path.home() / ".cache" / "vigil-road"))
DL = CACHE / "dl"
OUT = Path(__file__).resolve().parent.parent / "road-scene" / "eval"
ROAD_LABELS = ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign"]
LONG_SIDE = 640

OCV = "opencv-doc/usr/share/doc/opencv-doc/examples"
SOURCES = {
    "ultralytics": ("PyPI `ultralytics` 8.4.190 wheel, `ultralytics/assets/`", "AGPL-3.0 (the package's licence)"),
    "darknet": ("Debian `darknet` 0.0.0+git20180914.61c9d02e-2+b4, `/usr/share/darknet/data/`",
                "GPL-3.0+ or MIT or WTFPL (debian/copyright, `Files: *`)"),
    "nodeopencv": ("npm `opencv` (node-opencv) 7.0.0, `examples/files/`", "MIT (the package's licence)"),
    "skimage": ("PyPI `scikit-image` 0.26.0 wheel, `skimage/data/`",
                "see the note per image (skimage.data docstrings); the package is BSD-3-Clause"),
    "opencv": ("Debian `opencv-doc` 4.6.0+dfsg-12, `/usr/share/doc/opencv-doc/examples/`",
               "Apache-2.0 AND BSD-3-Clause (debian/copyright, `Files: *`; Debian removed the non-free lena images)"),
}

# (name, source, path under DL, labels; note)
IMAGES = [
    # ---- positives
    ("ultralytics_bus", "ultralytics", "ultralytics/ultralytics/assets/bus.jpg", "person;bus", ""),
    ("ultralytics_zidane", "ultralytics", "ultralytics/ultralytics/assets/zidane.jpg", "person", ""),
    ("darknet_dog", "darknet", "darknet/usr/share/darknet/data/dog.jpg", "bicycle;truck",
     "a dog, a bicycle, a white pickup truck (COCO calls pickups `truck`)"),
    ("darknet_person", "darknet", "darknet/usr/share/darknet/data/person.jpg", "person", "a person, a dog, a horse"),
    ("darknet_kite", "darknet", "darknet/usr/share/darknet/data/kite.jpg", "person", "small people on a beach, kites"),
    ("nodeopencv_car1", "nodeopencv", "node-opencv/package/examples/files/car1.jpg", "car", ""),
    ("nodeopencv_car2", "nodeopencv", "node-opencv/package/examples/files/car2.jpg", "car", ""),
    ("skimage_astronaut", "skimage", "skimage/skimage/data/astronaut.png", "person",
     "NASA, public domain (skimage.data.astronaut)"),
    ("skimage_camera", "skimage", "skimage/skimage/data/camera.png", "person",
     "CC0, Lav Varshney (skimage.data.camera); greyscale"),
    ("skimage_motorcycle", "skimage", "skimage/skimage/data/motorcycle_left.png", "bicycle;motorcycle",
     "Middlebury 2014 stereo benchmark (Scharstein et al.), shipped in scikit-image; a red bicycle stands behind the motorcycle"),
    ("opencv_messi5", "opencv", f"{OCV}/data/messi5.jpg", "person", "footballers, crowd"),
    ("opencv_basketball1", "opencv", f"{OCV}/data/basketball1.png", "person", "greyscale, indoors"),
    ("opencv_left01", "opencv", f"{OCV}/data/left01.jpg", "person",
     "greyscale; a person holding a calibration board in front of the face"),
    ("opencv_scenetext01", "opencv", f"{OCV}/text/scenetext01.jpg", "person;car", "two pedestrians, a parked estate car"),
    ("opencv_scenetext03", "opencv", f"{OCV}/text/scenetext03.jpg", "person", "one tiny pedestrian at the far end"),
    ("opencv_scenetext05", "opencv", f"{OCV}/text/scenetext05.jpg", "car",
     "road barriers; a car cut off at the top left"),
    ("opencv_scenetext06", "opencv", f"{OCV}/text/scenetext06.jpg", "person;car",
     "a red car at the bottom left, a person at the bottom edge; the round red sign is a no-entry sign, not a stop sign"),
    ("opencv_licenseplate", "opencv", f"{OCV}/data/licenseplate_motion.jpg", "car", "motion-blurred rear of a car"),
    ("opencv_leuvenB", "opencv", f"{OCV}/data/leuvenB.jpg", "bicycle", "two bicycles parked by a wall"),
    ("opencv_building", "opencv", f"{OCV}/data/building.jpg", "car", "a dark car partly hidden behind the hedge"),
    # ---- negatives: none of the eight labels
    ("darknet_eagle", "darknet", "darknet/usr/share/darknet/data/eagle.jpg", "", ""),
    ("darknet_giraffe", "darknet", "darknet/usr/share/darknet/data/giraffe.jpg", "", "a giraffe and a zebra"),
    ("darknet_horses", "darknet", "darknet/usr/share/darknet/data/horses.jpg", "", ""),
    ("nodeopencv_quads", "nodeopencv", "node-opencv/package/examples/files/quads.jpg", "", "paper on a table"),
    ("nodeopencv_shapes", "nodeopencv", "node-opencv/package/examples/files/shapes.jpg", "", "paper on a table"),
    ("skimage_chelsea", "skimage", "skimage/skimage/data/chelsea.png", "", "a cat; CC0, Stefan van der Walt"),
    ("skimage_coffee", "skimage", "skimage/skimage/data/coffee.png", "", "CC0, Rachel Michetti"),
    ("skimage_rocket", "skimage", "skimage/skimage/data/rocket.jpg", "", "SpaceX, public domain"),
    ("skimage_hubble", "skimage", "skimage/skimage/data/hubble_deep_field.jpg", "", "NASA, public domain"),
    ("skimage_coins", "skimage", "skimage/skimage/data/coins.png", "", "greyscale; no known copyright restrictions"),
    ("opencv_apple", "opencv", f"{OCV}/data/apple.jpg", "", ""),
    ("opencv_baboon", "opencv", f"{OCV}/data/baboon.jpg", "", ""),
    ("opencv_butterfly", "opencv", f"{OCV}/data/butterfly.jpg", "", ""),
    ("opencv_fruits", "opencv", f"{OCV}/data/fruits.jpg", "", ""),
    ("opencv_home", "opencv", f"{OCV}/data/home.jpg", "", "a palace, birds in the sky"),
    ("opencv_leuvenA", "opencv", f"{OCV}/data/leuvenA.jpg", "", "an empty cobbled street"),
    ("opencv_orange", "opencv", f"{OCV}/data/orange.jpg", "", ""),
    ("opencv_squirrel", "opencv", f"{OCV}/data/squirrel_cls.jpg", "", ""),
    ("opencv_stuff", "opencv", f"{OCV}/data/stuff.jpg", "", "a pen, a lighter, a coin on a table"),
    ("opencv_box_in_scene", "opencv", f"{OCV}/data/box_in_scene.png", "", "greyscale, boxes on a shelf"),
    ("opencv_starry_night", "opencv", f"{OCV}/data/starry_night.jpg", "", "a painting (landscape)"),
    ("opencv_chicky", "opencv", f"{OCV}/data/chicky_512.png", "", "a dog"),
    ("opencv_aloe", "opencv", f"{OCV}/data/aloeL.jpg", "", "a potted aloe"),
    ("opencv_ela", "opencv", f"{OCV}/data/ela_original.jpg", "", "a notebook"),
    ("opencv_plant", "opencv", f"{OCV}/alphamat/input_images/plant.jpg", "", "a potted plant indoors"),
    ("opencv_hfs_bird", "opencv", f"{OCV}/hfs/data/000.jpg", "", "a bird"),
    ("opencv_hfs_lake", "opencv", f"{OCV}/hfs/data/001.jpg", "", "a lake"),
    ("opencv_hfs_tree", "opencv", f"{OCV}/hfs/data/002.jpg", "", "a tree on a meadow"),
    ("opencv_scenetext02", "opencv", f"{OCV}/text/scenetext02.jpg", "", "a direction sign in a park"),
    ("opencv_scenetext04", "opencv", f"{OCV}/text/scenetext04.jpg", "", "a generator behind a wall"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default=";".join(ROAD_LABELS), help="the bundle's labels (';'-separated)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    keep = a.labels.split(";")
    (a.out / "images").mkdir(parents=True, exist_ok=True)
    csv = ["# Real stills, hand-labelled (see SOURCES.md; written by models/train/road_eval_set.py)", "path,labels"]
    md = ["# road-scene evaluation set: sources, licences, hand labels", "",
          "Real stills from packages the road-scene model never trains on, labelled by hand by looking at",
          "each image (`models/train/road_eval_set.py` holds the labels and writes this folder). Each image is",
          "downscaled to at most 640 px on its long side (Pillow bicubic) and stored as JPEG quality 85.",
          "`labels.csv` is `vigil eval`'s label-list format; an empty label field is a negative.", "",
          "Rule: a label is present when at least part of one such object is visible and recognisable in",
          "the whole image, however small. Labels column = all eight road labels (the hand labels);",
          f"`labels.csv` keeps those the bundle has: {', '.join(keep)}.", "",
          "## Sources", ""]
    for k, (where, lic) in SOURCES.items():
        md.append(f"- **{k}**: {where}. Licence: {lic}.")
    md += ["", "## Images", "", "| file | source | original file | hand labels | note |", "| --- | --- | --- | --- | --- |"]
    names = set()
    for name, src, rel, labels, note in IMAGES:
        assert name not in names, name
        names.add(name)
        img = Image.open(DL / rel).convert("RGB")
        s = LONG_SIDE / max(img.size)
        if s < 1:
            img = img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)
        img.save(a.out / "images" / f"{name}.jpg", quality=85)
        ls = [lb for lb in labels.split(";") if lb]
        assert all(lb in ROAD_LABELS for lb in ls), (name, ls)
        csv.append(f"images/{name}.jpg,{';'.join(lb for lb in ls if lb in keep)}")
        md.append(f"| `images/{name}.jpg` | {src} | `{Path(rel).name}` | {', '.join(ls) or '(none)'} | {note} |")
    neg = sum(1 for r in IMAGES if not r[3])
    md += ["", f"{len(IMAGES)} images, {neg} negatives ({100 * neg / len(IMAGES):.0f} %). Positives per label: "
           + ", ".join(f"{lb} {sum(lb in r[3].split(';') for r in IMAGES)}" for lb in ROAD_LABELS) + "."]
    (a.out / "labels.csv").write_text("\n".join(csv) + "\n")
    (a.out / "SOURCES.md").write_text("\n".join(md) + "\n")
    print(md[-1])


if __name__ == "__main__":
    main()
