"""nnU-Net v2 raw and Medical Segmentation Decathlon folders read as they are: channels from
`_0000`... files or a 4D NIfTI, class names from dataset.json, imagesTs/labelsTs as the test
split, voxel spacing from the headers, and one clear line for a dataset.json that disagrees
with the files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas_attn.data import check_folder, load_folder
from volumes import write_nifti

SPACING = (0.8, 0.5, 1.5)


def _nifti(path: Path, arr: np.ndarray, spacing=SPACING) -> None:
    write_nifti(path, arr, spacing)


def _case(rng, shape=(12, 10, 8), classes=3):
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 2:6, 2:5] = 1
    mask[7:10, 5:9, 3:7] = classes - 1
    chans = [rng.normal(c * 10, 1, shape).astype(np.float32) for c in range(2)]
    return chans, mask


def _nnunet(root: Path, train=("a", "b", "c", "d"), test=("t1", "t2"), channels=2,
            classes=3, labels=None) -> Path:
    rng = np.random.default_rng(0)
    for split, cases in (("Tr", train), ("Ts", test)):
        for case in cases:
            chans, mask = _case(rng, classes=classes)
            for c in range(channels):
                _nifti(root / f"images{split}" / f"{case}_{c:04d}.nii.gz", chans[c])
            _nifti(root / f"labels{split}" / f"{case}.nii.gz", mask)
    names = ["background", "liver", "tumour"][:classes]
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): ["T1", "T2"][c] for c in range(channels)},
        "labels": labels or {n: i for i, n in enumerate(names)},
        "numTraining": len(train), "file_ending": ".nii.gz"}))
    return root


def _decathlon(root: Path, cases=("la_001", "la_002", "la_003", "la_004")) -> Path:
    rng = np.random.default_rng(1)
    training = []
    for case in cases:
        chans, mask = _case(rng)
        _nifti(root / "imagesTr" / f"{case}.nii.gz", np.stack(chans, axis=-1))  # X, Y, Z, C
        _nifti(root / "labelsTr" / f"{case}.nii.gz", mask)
        training.append({"image": f"./imagesTr/{case}.nii.gz",
                         "label": f"./labelsTr/{case}.nii.gz"})
    (root / "imagesTs").mkdir()
    (root / "dataset.json").write_text(json.dumps({
        "name": "Toy", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "numTraining": len(cases), "numTest": 0, "training": training, "test": []}))
    return root


def test_nnunet_v2_raw_folder(tmp_path):
    root = _nnunet(tmp_path / "Dataset001_Toy")
    rep = check_folder(root)
    assert rep.ok, rep.problems
    assert rep.layout == "nnunet" and rep.channel_names == ["T1", "T2"]
    assert rep.class_names == ["background", "liver", "tumour"] and rep.classes == 3
    assert rep.splits == {"test": ["t1", "t2"]} and rep.n_samples == 6
    assert rep.spacing_min == rep.spacing_max == pytest.approx(SPACING)
    data = load_folder(root)
    i = data.names.index("b")
    assert data.images[i].shape == (2, 12, 10, 8)
    # channel 0000 first: the generator put mean 0 in channel 0 and mean 10 in channel 1
    assert abs(float(data.images[i][0].mean())) < 1 and float(data.images[i][1].mean()) > 9
    assert data.spacings[i] == pytest.approx(SPACING)
    from nas_attn.data import DataConfig, load_data

    train, val = load_data(DataConfig(source=str(root)))
    assert not {"t1", "t2"} & set(train.names + val.names)  # the test cases are kept out
    assert train.spacings is not None and train.class_names == rep.class_names


def test_decathlon_folder(tmp_path):
    root = _decathlon(tmp_path / "Task02_Toy")
    rep = check_folder(root)
    assert rep.ok, rep.problems
    assert rep.layout == "decathlon" and rep.channel_names == ["FLAIR", "T1w"]
    assert rep.class_names == ["background", "edema", "tumour"] and rep.splits is None
    data = load_folder(root)
    assert data.in_channels == 2 and data.images[0].shape == (2, 12, 10, 8)
    assert float(data.images[0][1].mean()) > 9  # the 4D NIfTI's last axis is the channel


@pytest.mark.parametrize("break_it,expected", [
    (lambda r: (r / "imagesTr" / "b_0001.nii.gz").unlink(),
     "imagesTr/b_0001.nii.gz: missing (dataset.json names 2 channels)"),
    (lambda r: (r / "labelsTr" / "c.nii.gz").unlink(),
     "imagesTr/c_0000.nii.gz: no label (expected labelsTr/c.nii.gz)"),
    (lambda r: _edit(r, numTraining=9),
     "dataset.json: numTraining is 9 but imagesTr/ holds 4 complete cases"),
    (lambda r: _edit(r, labels={"background": 0, "liver": 1}),
     "labelsTr/a.nii.gz: value 2 not among dataset.json's labels (ids 0..1)"),
    (lambda r: _edit(r, labels={"background": 0, "liver": 1, "whole": [1, 2]}),
     "dataset.json: labels.whole is a region"),
    (lambda r: _edit(r, labels={"background": 0, "liver": 2}),
     "dataset.json: labels: ids [0, 2] are not 0..1"),
    (lambda r: _edit(r, channel_names={"0": "T1"}),
     "imagesTr/a_0001.nii.gz: channel 1 beyond the 1 of dataset.json's channel_names"),
    (lambda r: (r / "dataset.json").write_text("{not json"),
     "dataset.json: not valid JSON"),
    (lambda r: _copy_case(r, "a"),
     "imagesTs/a_0000.nii.gz: case 'a' is also a training case in imagesTr/"),
])
def test_a_dataset_json_that_disagrees_with_the_files_is_named(tmp_path, break_it, expected):
    root = _nnunet(tmp_path / "ds")
    break_it(root)
    rep = check_folder(root)
    assert not rep.ok
    assert any(expected in p for p in rep.problems), rep.problems


def test_decathlon_entry_without_its_file(tmp_path):
    root = _decathlon(tmp_path / "Task")
    (root / "labelsTr" / "la_003.nii.gz").unlink()
    rep = check_folder(root)
    assert "dataset.json: training[2].label './labelsTr/la_003.nii.gz': no such file" \
        in rep.problems


def test_data_check_names_the_layout_and_spacing(tmp_path, cli):
    root = _nnunet(tmp_path / "ds")
    code, out = cli("data", "check", root)
    assert code == 0, out
    assert "nnU-Net v2 raw" in out and "0.8×0.5×1.5" in out and "T1, T2" in out
    assert "liver" in out and "imagesTs/ + labelsTs/: 2 test" in out
    assert "cache:" in out and "read patch by patch" in out  # 3D: the preprocessed cache
    (root / "labelsTr" / "a.nii.gz").unlink()
    code, out = cli("data", "check", root)
    assert code == 1 and "labelsTr/a.nii.gz" in out and "Traceback" not in out


def _edit(root: Path, **changes) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


def _copy_case(root: Path, case: str) -> None:
    for c in range(2):
        name = f"{case}_{c:04d}.nii.gz"
        (root / "imagesTs" / name).write_bytes((root / "imagesTr" / name).read_bytes())
    (root / "labelsTs" / f"{case}.nii.gz").write_bytes(
        (root / "labelsTr" / f"{case}.nii.gz").read_bytes())


def test_evaluate_on_an_nnunet_folder_gives_hd95_in_mm(tmp_path, cli):
    """The folder's spacing reaches HD95 (mm) through `evaluate`, and the training validation
    loader carries it too."""
    import torch

    from nas_attn.architecture.description import UNetArch
    from nas_attn.training.checkpoint import save_checkpoint
    from nas_attn.architecture.builder import build_unet

    root = _nnunet(tmp_path / "ds", channels=2)
    arch = UNetArch(spatial_dims=3, in_channels=2, depth=1, widths=(4, 8), classes=3)
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "best.pt", arch, build_unet(arch).state_dict(),
                         {"patch_size": [8, 8, 8], "metrics": {"dice": 0.1}, "epoch": 1})
    code, out = cli("evaluate", "--model", ck, "--data", root, "--json", tmp_path / "s.json")
    assert code == 0, out
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["hd95_unit"] == "mm" and "HD95 (mm)" in out
    assert res["class_names"] == ["background", "liver", "tumour"] and "liver" in out
    from nas_attn.data.loaders import WholeImageDataset

    item = WholeImageDataset(load_folder(root))[0]
    assert item["spacing"].tolist() == pytest.approx(SPACING)
