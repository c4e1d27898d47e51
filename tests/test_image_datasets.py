"""Image datasets (CIFAR-10/100, CUB-200-2011, ImageNet-style folders) on miniature copies of
the official layouts: real pickled batches, real JPEGs, the exact text file formats."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vidnl.config import load_config
from vidnl.data.datasets import build_dataset
from vidnl.data.loader import build_test_loader, build_train_loader
from vidnl.errors import DatasetError


def cifar_images(n, seed):
    """n random 32x32 RGB images as the CIFAR rows: N×3072 uint8, R plane, G plane, B plane."""
    rng = np.random.default_rng(seed)
    hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return hwc, hwc.transpose(0, 3, 1, 2).reshape(n, 3072)


def dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root, per_batch=4, test=6):
    root.mkdir()
    images = []
    for b in range(1, 6):
        hwc, rows = cifar_images(per_batch, b)
        labels = [(b + i) % 10 for i in range(per_batch)]
        dump(root / f"data_batch_{b}", {b"batch_label": f"training batch {b} of 5".encode(), b"labels": labels,
                                        b"data": rows, b"filenames": [b"x.png"] * per_batch})
        images += list(zip(hwc, labels))
    hwc, rows = cifar_images(test, 99)
    dump(root / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": list(range(test)),
                               b"data": rows, b"filenames": [b"x.png"] * test})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(root / "batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return images, list(zip(hwc, range(test)))


def cfg_for(name, root, *extra):
    opts = ["TRAIN.DATASET", name, "TEST.DATASET", name, "DATA.PATH_TO_DATA_DIR", str(root), "DATA.NUM_FRAMES", "1",
            "DATA_LOADER.NUM_WORKERS", "0", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4"]
    return load_config(None, opts + list(extra))


def test_cifar10_layout_values_and_augmentation(tmp_path):
    train_images, test_images = make_cifar10(tmp_path / "cifar-10-batches-py")
    cfg = cfg_for("cifar10", tmp_path / "cifar-10-batches-py", "MODEL.NUM_CLASSES", "10", "DATA.TRAIN_CROP_SIZE",
                  "32", "DATA.TEST_CROP_SIZE", "32", "DATA.MEAN", "[0, 0, 0]", "DATA.STD", "[1, 1, 1]")
    train, test = build_dataset("cifar10", cfg, "train"), build_dataset("cifar10", cfg, "test")
    assert len(train) == 20 and len(test) == 6 and build_dataset("cifar10", cfg, "val").views_per_video == 1
    assert train.labels() == [lab for _, lab in train_images] and train.cfg.class_names[9] == "truck"

    # test items are the images themselves (H×W×RGB order of the pickled rows), 1 view of T=1
    item = test[4]
    assert item["inputs"].shape == (1, 1, 32, 32, 3) and item["inputs"].dtype == torch.uint8  # raw V×T×H×W×C
    item["inputs"] = test.normalizer(item["inputs"])  # what the model gets (here mean 0, std 1)
    assert item["inputs"].shape == (1, 3, 1, 32, 32) and item["label"] == 4
    expected = torch.from_numpy(test_images[4][0]).permute(2, 0, 1).float() / 255
    assert torch.allclose(item["inputs"][0, :, 0], expected)

    # a training item is a 32x32 crop of the image zero-padded by 4, maybe flipped
    x = train.normalizer(train[7]["inputs"])
    assert x.shape == (3, 1, 32, 32) and x.dtype == torch.float32
    img = torch.from_numpy(train_images[7][0]).permute(2, 0, 1).float() / 255
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
               if torch.allclose((padded.flip(-1) if f else padded)[:, dy:dy + 32, dx:dx + 32], x[:, 0])]
    assert len(matches) == 1

    # randomness depends on (seed, epoch, index) only
    again = train.normalizer(train[7]["inputs"])
    assert torch.equal(x, again)
    train.set_epoch(1)
    others = [train.normalizer(train[7]["inputs"])]
    train.set_epoch(2)
    others.append(train.normalizer(train[7]["inputs"]))
    assert any(not torch.equal(x, o) for o in others)
    train.set_epoch(0)
    assert torch.equal(train.normalizer(train[7]["inputs"]), x)


def test_cifar100_fine_labels_and_train_loader(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    hwc, rows = cifar_images(12, 0)
    dump(root / "train", {b"filenames": [b"a.png"] * 12, b"batch_label": b"training batch 1 of 1",
                          b"fine_labels": [i * 8 for i in range(12)], b"coarse_labels": [i % 20 for i in range(12)],
                          b"data": rows})
    dump(root / "test", {b"filenames": [b"a.png"] * 3, b"batch_label": b"testing batch 1 of 1",
                         b"fine_labels": [99, 0, 50], b"coarse_labels": [0, 1, 2], b"data": rows[:3]})
    dump(root / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                         b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    cfg = cfg_for("cifar100", root, "MODEL.NUM_CLASSES", "100", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE",
                  "32", "DATA.MEAN", "[0.5071, 0.4865, 0.4409]", "DATA.STD", "[0.2673, 0.2564, 0.2762]",
                  "DATA.IMAGE_PADDING", "0")
    loader = build_train_loader(cfg)
    batches = list(loader)
    assert len(batches) == 3
    assert batches[0]["inputs"].shape == (4, 1, 32, 32, 3)
    normalize = loader.dataset.normalizer
    assert sorted(torch.cat([b["labels"] for b in batches]).tolist()) == [i * 8 for i in range(12)]
    # without padding a crop is the whole image (maybe flipped): channel means are those of the
    # pickled pixels, normalised with the CIFAR-100 statistics
    mean = torch.cat([normalize(b["inputs"]) for b in batches]).mean(dim=(0, 2, 3, 4)).double()
    pixel_mean = torch.from_numpy(hwc.reshape(-1, 3).mean(0) / 255)
    expected = (pixel_mean - torch.tensor([0.5071, 0.4865, 0.4409]).double()) / torch.tensor([0.2673, 0.2564, 0.2762])
    assert torch.allclose(mean, expected, atol=1e-4)
    test_batch = next(iter(build_test_loader(cfg, "test")))
    assert test_batch["inputs"].shape == (3, 1, 32, 32, 3) and test_batch["labels"].tolist() == [99, 0, 50]
    with pytest.raises(DatasetError, match="set MODEL.NUM_CLASSES 100"):
        build_dataset("cifar100", cfg_for("cifar100", root, "MODEL.NUM_CLASSES", "10"), "train")
    os.remove(root / "meta")
    with pytest.raises(DatasetError, match="CIFAR file not found: .*meta "):
        build_dataset("cifar100", cfg, "train")


def make_cub(root):
    """2 classes x 4 images (3 train, 1 test each); image k is grey with a coloured box."""
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    colours = [(250, 10, 10), (10, 10, 250)]
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    k = 0
    for c, name in enumerate(classes):
        (root / "images" / name).mkdir(parents=True)
        for j in range(4):
            k += 1
            img = Image.new("RGB", (60, 40), (128, 128, 128))
            img.paste(colours[c], (20 + j, 15, 40 + j, 30))  # box x=20+j, y=15, w=20, h=15
            fname = f"{name}/{name.split('.')[1]}_{k:04d}_{k}.jpg"
            img.save(root / "images" / fname, quality=95)
            lines["images"].append(f"{k} {fname}")
            lines["labels"].append(f"{k} {c + 1}")
            lines["split"].append(f"{k} {0 if j == 3 else 1}")
            lines["boxes"].append(f"{k} {20.0 + j} 15.0 20.0 15.0")
    for fname, key in (("images.txt", "images"), ("image_class_labels.txt", "labels"),
                       ("train_test_split.txt", "split"), ("bounding_boxes.txt", "boxes")):
        (root / fname).write_text("\n".join(lines[key]) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(classes)))
    return colours


def test_cub_splits_bounding_boxes_and_bad_images(tmp_path):
    root = tmp_path / "CUB_200_2011"
    colours = make_cub(root)
    common = ["MODEL.NUM_CLASSES", "2", "DATA.TRAIN_CROP_SIZE", "24", "DATA.TEST_CROP_SIZE", "16",
              "DATA.MEAN", "[0, 0, 0]", "DATA.STD", "[1, 1, 1]"]
    cfg = cfg_for("cub200", root, *common)
    train, test = build_dataset("cub200", cfg, "train"), build_dataset("cub200", cfg, "test")
    assert len(train) == 6 and len(test) == 2 and test.labels() == [0, 1] and train.labels() == [0, 0, 0, 1, 1, 1]
    assert train.records[0].bbox == (20.0, 15.0, 20.0, 15.0)
    assert train[0]["inputs"].shape == (1, 24, 24, 3)
    # the whole image: resize to short side 18 (16 / 0.875) + centre crop 16: grey corner, box in the middle
    whole = test.normalizer(test[1]["inputs"])
    assert whole.shape == (1, 3, 1, 16, 16)
    assert torch.allclose(whole[0, :, 0, 0, 0], torch.full((3,), 128 / 255), atol=0.03)
    assert torch.allclose(whole[0, :, 0, 8, 8], torch.tensor(colours[1]) / 255, atol=0.05)
    boxed = build_dataset("cub200", cfg_for("cub200", root, *common, "DATA.USE_BBOX", "True"), "test")
    for i, colour in enumerate(colours):
        pix = boxed.normalizer(boxed[i]["inputs"])[0, :, 0]
        assert torch.allclose(pix.mean(dim=(1, 2)), torch.tensor(colour) / 255, atol=0.03)

    # a broken JPEG does not stop training: another image is used and the failure travels along
    bad = train.records[2].path
    open(bad, "wb").write(b"not a jpeg")
    train = build_dataset("cub200", cfg, "train")
    item = train[2]
    assert item["index"] != 2 and item["failures"][0][0] == bad and "cannot read image" in item["failures"][0][1]
    assert item["inputs"].shape == (1, 24, 24, 3)
    (root / "image_class_labels.txt").write_text("1 1\n")
    with pytest.raises(DatasetError, match="image_class_labels.txt: no entry for image id 2"):
        build_dataset("cub200", cfg, "train")


def test_image_folder_classes_and_transforms(tmp_path):
    for split, per_class in (("train", 3), ("val", 2)):
        for c, name in enumerate(["n01440764", "n01443537", "n01484850"]):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (50 + 10 * j, 40), (80 * c, 60, 40)).save(d / f"{name}_{j}.JPEG")
    (tmp_path / "train" / "n01440764" / "notes.txt").write_text("not an image")
    cfg = cfg_for("imagefolder", tmp_path, "MODEL.NUM_CLASSES", "3", "DATA.TRAIN_CROP_SIZE", "32",
                  "DATA.TEST_CROP_SIZE", "28", "DATA.IMAGE_TEST_RESIZE", "32")
    train, val, test = (build_dataset("imagefolder", cfg, s) for s in ("train", "val", "test"))
    assert len(train) == 9 and len(val) == 6 and [r.path for r in test.records] == [r.path for r in val.records]
    assert val.labels() == [0, 0, 1, 1, 2, 2]
    assert train[4]["inputs"].shape == (1, 32, 32, 3) and val[3]["inputs"].shape == (1, 1, 28, 28, 3)
    # class colour survives: red channel of class 2 is 160/255, normalised with the default video mean/std
    assert abs(float(val.normalizer(val[5]["inputs"])[0, 0].mean()) - (160 / 255 - 0.45) / 0.225) < 0.05
    batch = next(iter(build_train_loader(cfg)))
    assert batch["inputs"].shape == (4, 1, 32, 32, 3)
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(DatasetError, match="n99999999: class folder not in"):
        build_dataset("imagefolder", cfg, "val")


@pytest.mark.parametrize("name", ["CIFAR100/PRERESNET56_BASE.yaml", "CIFAR100/PRERESNET56_SNL.yaml",
                                  "CUB/R50_BASE.yaml", "CUB/R50_SNL.yaml", "ImageNet/R50_BASE.yaml",
                                  "ImageNet/R50_SNL.yaml"])
def test_image_configs_are_valid(name):
    from conftest import ROOT

    cfg = load_config(os.path.join(ROOT, "configs", name))
    assert cfg.DATA.NUM_FRAMES == 1 and cfg.TRAIN.DATASET == cfg.TEST.DATASET
    assert cfg.TRAIN.DATASET in ("cifar100", "cub200", "imagefolder")


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    make_cifar10(tmp_path / "c")
    opts = ["MODEL.NUM_CLASSES", "10", "DATA.TRAIN_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "5"]
    one = [b["inputs"] for b in build_train_loader(cfg_for("cifar10", tmp_path / "c", *opts))]
    two = [b["inputs"] for b in build_train_loader(cfg_for("cifar10", tmp_path / "c", *opts,
                                                           "DATA_LOADER.NUM_WORKERS", "2"))]
    assert len(one) == len(two) == 4 and all(torch.equal(a, b) for a, b in zip(one, two))
