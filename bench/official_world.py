"""A synthetic U2-Bench world for the official-parity check: an HF-layout dataset folder and model answers.

Independent of u2eval on purpose (it must not import it, nor copy its synthetic generator): standard library,
Pillow and numpy only. ``write_world`` writes, under one root:

- ``hf/``: the dataset folder as published on Hugging Face (8 task folders of 17-column TSVs plus
  ``an_explanation_of_the_columns.tsv``), with made-up source names, images, labels, boxes, values and texts;
- ``predictions/<model>/{cla,seg,measurement,report}/<scorer key>/<model>/<model>_combined_results.jsonl``:
  per model, the records the evalkit's multimodal batch script writes (``id``, ``question`` = the message list
  its dataset classes' ``build_prompt`` builds, ``response``, ``time``). The prompts are built at run time by
  the evalkit's own ``build_prompt`` code and prompt files, read from its git mirror (never pasted here);
- ``kit_cache/images/<md5>.jpg``: the images as the evalkit's ``dump_image`` leaves them (paths in the records);
- ``answers-<model>.jsonl``: the same answers keyed by u2eval case id (``{task}/{file stem}/{row}/{sha8}``);
- ``world.json``: what was written, the faults each model carries and the hand-computed spot checks.

Model ``alpha`` is well formed everywhere; ``LLaVA-1.5-13B-HF`` too, under the one name the official scorers edit
the answers of; ``beta`` carries the file-level faults (a missing record, JSON numbers,
a null report after the first five rows); ``gamma`` carries the null report in the first five rows that crashes
the official report scorer, so it is scored in an official run of its own (``ModelFiles.official_run``).
"""

from __future__ import annotations

import ast
import base64
import builtins
import csv
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_EVALKIT_REPO = Path("/work/.mirror/dolphin-sound+u2-bench-evalkit/repo")

HF_COLUMNS = (
    "dataset_name",
    "img_data",
    "patient_id",
    "prompt",
    "anatomy_location",
    "demographic",
    "classification_task",
    "class_label",
    "options",
    "seg_data",
    "seg_channel_name",
    "gt_bbox",
    "keypoints",
    "measurement",
    "caption",
    "report",
    "notes",
)
EXPLANATION_FILE = "an_explanation_of_the_columns.tsv"
TASK_FOLDERS = {
    "dd": "disease_diagnosis",
    "vra": "view_recognition_and_assessment",
    "ll": "lesion_localisation",
    "od": "organ_detection",
    "kd": "keypoint_detection",
    "cve": "clinical_value_estimation",
    "rg": "report_generation",
    "cg": "caption_generation",
}
SECTORS = tuple(
    f"{row} {col}" if (row, col) != ("middle", "center") else "center"
    for row in ("upper", "middle", "lower")
    for col in ("left", "center", "right")
)
NOT_VISIBLE = "not visible"

# What the evalkit's batch scripts write as the response when the API fails (vlmeval/silicon_test/*.py).
KIT_FAILURES = (
    "API call failed: 500",
    "API调用失败: 500",
    "[错误: 模型返回空响应，已重试 3 次]",
    "多次API调用尝试失败",
    "API响应格式错误，未找到响应内容",
    "API调用被速率限制，请稍后再试",
    "调用API时发生错误: HTTPSConnectionPool read timed out",
    "解析模型响应失败",
    "API response format error, no response content found",
    "API调用失败: 收到空响应",
    "API返回了空响应",
)

# The evalkit files build_prompt needs (read from the mirror at run time).
_KIT_FILES = {
    "cla": "vlmeval/dataset/image_cla.py",
    "seg": "vlmeval/dataset/image_seg.py",
    "measurement": "vlmeval/dataset/image_measurement.py",
    "report": "vlmeval/dataset/image_report.py",
}
_KIT_PROMPT_FILES = ("vlmeval/dataset/cla_prompt.json", "vlmeval/dataset/mea_prompt.json")

Answer = str | int | float | None


# ---------------------------------------------------------------------------------------------------------------
# The datasets


@dataclass(frozen=True)
class SetSpec:
    """One dataset of one task: where it lives in the HF folder and which official scorer key reads it."""

    task: str  # dd vra ll od kd cve rg cg
    id: str  # the dataset id u2eval and the table script use ('28_1', '74is_normal', ...)
    hf_id: str  # the <id> in dataset_name ('74' for both PCOS sets)
    source: str  # the made-up source name after the '.'
    group: str  # the official folder: cla / seg / measurement / report
    key: str  # the official scorer's TSV_PATH key ('28' = KL grade, '28_class' = knee view)
    anatomy: str
    ctask: str = ""  # classification_task (DD/VRA)
    labels: tuple[str, ...] = ()
    share: str = ""  # rows identical with another task's set (the official files serve both)
    file_stem: str = ""  # HF file name without .tsv
    image: str = "L"  # L / RGB (JPEG) / RGBA / P
    channels: tuple[str, ...] = ()  # seg_channel_name values (LL/OD/KD)
    measure_key: str = ""  # key of the measurement dict (CVE)

    @property
    def dataset_name(self) -> str:
        return f"{self.hf_id}.{self.source}"


_KNEE_VIEWS = tuple(
    f"{side} {view}"
    for side in ("left", "right")
    for view in (
        "anterior suprapatellar longitudinal",
        "anterior suprapatellar longitudinal with power Doppler",
        "anterior suprapatellar transverse in 30 degrees flexion",
        "anterior suprapatellar transverse in maximal flexion",
        "lateral longitudinal",
        "medial longitudinal",
        "posterior medial transverse",
    )
)
_KL = ("No OA", "Questionable OA", "Mild OA", "Moderate OA", "Severe OA", "Total joint replacement")
_ANATOMY = ("Fetal", "Thyroid", "Heart", "Lung", "Liver", "Carotid", "Kidney", "Prostate", "Breast", "Other")
_BM = ("benign", "malignant")


def _dd(i: str, source: str, anatomy: str, ctask: str, labels: Sequence[str], **kw: Any) -> SetSpec:
    return SetSpec("dd", i, kw.pop("hf_id", i), source, "cla", kw.pop("key", i), anatomy, ctask, tuple(labels), **kw)


def _vra(i: str, source: str, anatomy: str, ctask: str, labels: Sequence[str], **kw: Any) -> SetSpec:
    return SetSpec("vra", i, kw.pop("hf_id", i), source, "cla", kw.pop("key", i), anatomy, ctask, tuple(labels), **kw)


def _seg(task: str, i: str, source: str, anatomy: str, channels: Sequence[str], **kw: Any) -> SetSpec:
    return SetSpec(task, i, i, source, "seg", i, anatomy, channels=tuple(channels), **kw)


def _cve(i: str, source: str, anatomy: str, measure_key: str, **kw: Any) -> SetSpec:
    return SetSpec("cve", i, i, source, "measurement", i, anatomy, measure_key=measure_key, **kw)


SETS: tuple[SetSpec, ...] = (
    # Disease diagnosis (28_1 = Kellgren-Lawrence grade, which the official scorer keys '28')
    _dd("21", "BreastUS_Lesions", "breast", "Malignancy", _BM, image="RGB"),
    _dd("23", "BreastMass_Cls", "breast", "Malignancy", ("normal", "benign", "malignant"), share="g23"),
    _dd("25", "SkinLesion_HFUS", "skin", "Malignancy", _BM, image="RGBA"),
    _dd("28_1", "KneeOA_KLGrading", "knee", "KLGrade", _KL, key="28"),
    _dd("32", "ThyroidNodule_Img", "thyroid", "Malignancy", _BM, share="g32"),
    _dd("40", "BreastBIRADS_Set", "breast", "BIRADS", ("2", "3", "4A", "4B", "4C", "5")),
    _dd("42", "PancreasMass_US", "pancreas", "PancreasCancer", ("non-pancreas cancer", "pancreas cancer")),
    _dd("44", "LungCOVID_Frames", "lung", "LUSScore", ("0", "1", "2", "3"), image="RGB"),
    _dd("57", "LiverFat_Frames", "liver", "FattyLiver", ("0", "1"), share="g57"),
    _dd("66", "BreastSet66", "breast", "Malignancy", _BM),
    _dd("70", "ThyroidTriage", "thyroid", "ThyroidStatus", ("normal thyroid", "benign", "malignant")),
    _dd(
        "74is_normal",
        "PolycysticOvary_Set",
        "ovary",
        "IsNormal",
        ("Appears abnormal", "Appears normal"),
        hf_id="74",
        key="74is_normal",
        file_stem="74_pcos_is_normal",
    ),
    _dd("75", "OvaryPCOM_Cls", "ovary", "PCOM", ("infected", "noninfected")),
    # View recognition and assessment (28 = knee view, which the official scorer keys '28_class')
    _vra(
        "03",
        "FetalPlaneDB_subset",
        "fetus",
        "FetalPlane",
        ("Fetal abdomen", "Fetal femur", "Fetal brain", "Fetal thorax", "Maternal cervix", "Other"),
    ),
    _vra("10", "FPUS23", "fetus", "FetusOrientation", ("hdvb", "hdvf", "huvb", "huvf")),
    _vra("18", "EchoApical_Views", "heart", "ApicalView", ("2CH", "4CH")),
    _vra("28", "KneeScan_Views", "knee", "KneeView", _KNEE_VIEWS, key="28_class"),
    _vra(
        "37",
        "ThyroidPlanes",
        "thyroid",
        "Plane",
        ("Axial/Transverse Plane", "Coronal Plane", "Sagittal Plane"),
        image="RGB",
    ),
    _vra("50", "AbdomenAC_Frames", "fetal abdomen", "ACPlane", ("none", "optimal", "suboptimal")),
    _vra(
        "53",
        "Intrapartum_Landmarks",
        "pelvis",
        "Landmarks",
        ("None", "OnlyFetalHead", "OnlySymphysisPubis", "SymphysisPubis+FetalHead"),
    ),
    _vra("69", "CarotidSegments", "carotid", "Segment", ("external carotid", "left carotid", "right carotid")),
    _vra(
        "74is_visible",
        "PolycysticOvary_Set",
        "ovary",
        "IsVisible",
        ("Not-visible", "Visible"),
        hf_id="74",
        key="74is_visible",
        file_stem="74_pcos_is_visible",
    ),
    _vra("anatomy", "MultiOrgan_Survey", "mixed", "Anatomy", _ANATOMY, image="P"),
    # Lesion localisation
    _seg("ll", "04", "BreastLesion_Loc", "breast", ("lesion",)),
    _seg("ll", "17", "LiverLesion_Loc", "liver", ("lesion",)),
    _seg("ll", "23", "BreastMass_Cls", "breast", ("lesion",), share="g23"),
    _seg("ll", "32", "ThyroidNodule_Img", "thyroid", ("nodule",), share="g32"),
    _seg("ll", "64", "BrEaST-Lesions_USG", "breast", ("tumor",), image="RGB"),
    # Organ detection (09 and 13 share one file)
    _seg("od", "09", "AbdomenOrgans_A", "abdomen", ("liver", "kidney"), file_stem="od_09_13_abdomen"),
    _seg("od", "13", "KidneySeg_B", "kidney", ("renal cortex",), file_stem="od_09_13_abdomen"),
    _seg("od", "16", "ProstateSeg", "prostate", ("prostate",)),
    _seg("od", "18", "EchoChambers", "heart", ("left ventricle", "left atrium", "myocardium")),
    _seg("od", "31", "FetalHeadHC_Seg", "fetal head", ("fetal skull",)),
    _seg("od", "37", "ThyroidNeck_Seg", "thyroid", ("thyroid lobe", "trachea", "carotid artery"), image="RGB"),
    _seg("od", "38", "NerveBlock_US", "brachial plexus", ("nerve",)),
    _seg("od", "47", "GallbladderSeg", "gallbladder", ("gallbladder",), image="RGB"),
    _seg("od", "49", "OvaryFollicles", "ovary", ("ovary", "follicle"), image="P"),
    _seg("od", "50", "AbdomenAC_Frames", "fetal abdomen", ("fetal abdomen",), share="g50"),
    _seg("od", "52", "SpleenSeg", "spleen", ("spleen",)),
    _seg("od", "53", "Intrapartum_Seg", "fetal head and pubic symphysis", ("pubic symphysis", "fetal head")),
    _seg("od", "67", "BladderSeg", "bladder", ("bladder",)),
    # Keypoint detection
    _seg("kd", "48", "EchoKeypoints", "heart", ("mitral valve annulus", "aortic valve", "apex")),
    # Clinical value estimation
    _cve("18", "EchoEF_Frames", "heart", "EF"),
    _cve("27", "CarotidIMT", "carotid artery", "IMT", image="RGB"),
    _cve("31", "FetalHeadHC", "fetal head", "head circumference"),
    _cve("50", "AbdomenAC_Frames", "fetal abdomen", "abdominal_circumference", share="g50"),
    _cve("57", "LiverFat_Frames", "liver", "fat value", share="g57"),
    # Report and caption generation (CG 44 is keyed '44' in the report folder)
    SetSpec("rg", "39", "39", "AbdomenReports_EN", "report", "39", "abdomen"),
    SetSpec("cg", "10", "10", "FPUS23", "report", "10", "fetus"),
    SetSpec("cg", "44", "44", "LungCOVID_Frames", "report", "44", "lung", image="RGB"),
)

# Value ranges of the CVE truths we generate (the official normalisation ranges are the scorer's business).
_CVE_RANGES = {
    "EF": (15.0, 70.0),
    "IMT": (0.4, 1.3),
    "head circumference": (120.0, 340.0),
    "abdominal_circumference": (120.0, 380.0),
    "fat value": (0.0, 60.0),
}


def _file_stem(spec: SetSpec) -> str:
    if spec.file_stem:
        return spec.file_stem
    return f"{spec.hf_id}_{spec.source.lower().replace('-', '_')}"


# ---------------------------------------------------------------------------------------------------------------
# Randomness


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _np_rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _balanced(rng: random.Random, labels: Sequence[str], n: int) -> list[str]:
    """Every label as often as n allows (a short set still holds 4A on 40), in random order."""
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Images


def _image_bytes(rng: np.random.Generator, mode: str, spot: tuple[float, float] | None) -> bytes:
    """A small fan-shaped speckle image, with a bright blob at ``spot`` (normalised x, y) when given."""
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    angle = np.arctan2(xx - w / 2, yy + 8)
    fan = (np.abs(angle) < 0.75) & (yy > 2)
    pixels = rng.gamma(2.0, 25.0, (h, w)) * fan
    if spot is not None:
        cx, cy = spot[0] * w, spot[1] * h
        pixels += 140.0 * np.exp(-(((xx - cx) ** 2) + ((yy - cy) ** 2)) / 18.0)
    gray = np.clip(pixels, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    if mode == "RGB":
        tint = np.stack([gray, (gray * 0.95).astype(np.uint8), (gray * 0.9).astype(np.uint8)], axis=-1)
        Image.fromarray(tint, "RGB").save(buf, "JPEG", quality=90)
    elif mode == "RGBA":
        alpha = np.full_like(gray, 255)
        Image.fromarray(np.stack([gray, gray, gray, alpha], axis=-1), "RGBA").save(buf, "PNG")
    elif mode == "P":
        Image.fromarray(gray, "L").convert("P").save(buf, "PNG")
    else:
        Image.fromarray(gray, "L").save(buf, "PNG")
    return buf.getvalue()


def _dump_like_kit(img_b64: str, cache: Path) -> Path:
    """Where the evalkit's dump_image puts a row's image: ``<cache>/<md5 of the base64 text>.jpg``."""
    target = cache / f"{hashlib.md5(img_b64.encode()).hexdigest()}.jpg"
    if not target.exists():
        image: Image.Image = Image.open(io.BytesIO(base64.b64decode(img_b64)))
        if image.mode in ("RGBA", "P"):
            image = image.convert("RGB")
        image.save(target)
    return target


# ---------------------------------------------------------------------------------------------------------------
# Rows


@dataclass
class _Row:
    """One HF row plus the truths the answers are drawn from."""

    cells: dict[str, str]
    image: bytes
    label: str = ""  # DD/VRA label text
    location: str = ""  # LL/OD/KD: a sector word or 'not visible'
    value: float | None = None  # CVE truth (None = not measurable)
    text: str = ""  # RG/CG reference


_AXIS = {"upper": (0.2, 0.3, 0.4499), "middle": (0.45, 0.5, 0.5499), "lower": (0.55, 0.7, 0.85)}
_COLS = {"left": (0.15, 0.3, 0.4499), "center": (0.45, 0.5, 0.5499), "right": (0.55, 0.7, 0.88)}


def _spot_for(rng: random.Random, location: str) -> tuple[float, float]:
    """A centre inside the sector, thresholds 0.45 / 0.55 included (middle = [0.45, 0.55))."""
    if location == "center":
        row, col = "middle", "center"
    else:
        row, col = location.split()
    return rng.choice(_COLS[col]), rng.choice(_AXIS[row])


def _location_cells(rng: random.Random, spec: SetSpec, channel: str, location: str, row: int) -> dict[str, str]:
    """gt_bbox (LL/OD) or keypoints (KD) for a truth location; 'not visible' as an empty cell or ``{}``."""
    column = "keypoints" if spec.task == "kd" else "gt_bbox"
    if location == NOT_VISIBLE:  # KD: always empty ('{}' would crash the evalkit's KD prompt builder)
        return {column: "" if row % 2 or spec.task == "kd" else "{}"}
    cx, cy = _spot_for(rng, location)
    if spec.task == "kd":
        return {"keypoints": repr({channel: [cx, cy]})}
    box = [cx, cy, round(rng.uniform(0.05, 0.3), 3), round(rng.uniform(0.05, 0.3), 3)]
    if rng.random() < 0.15:  # a list of structures: only the first counts
        other = [round(rng.uniform(0.1, 0.9), 3) for _ in range(2)] + [0.1, 0.1]
        return {"gt_bbox": repr([{channel: box}, {"other structure": other}])}
    return {"gt_bbox": repr({channel: box})}


def _measure_value(rng: random.Random, key: str) -> float | int:
    lo, hi = _CVE_RANGES[key]
    if key == "fat value":
        return rng.randint(int(lo), int(hi))
    if key == "IMT":
        return round(rng.uniform(lo, hi), 2)
    return round(rng.uniform(lo, hi), 1)


def _measure_cell(key: str, value: float | int | None, row: int) -> str:
    if key == "IMT":  # a list; unmeasurable rows hold None (a list of None, or None itself)
        return repr({"IMT": [value]}) if (value is not None or row % 2) else repr({"IMT": None})
    return repr({key: value})


_REPORT_SENTENCES = (
    (
        "The liver is normal in size with a smooth capsule.",
        "The liver is enlarged with a blunted inferior edge.",
        "The liver appears slightly small with an irregular nodular surface.",
    ),
    (
        "Hepatic parenchyma shows homogeneous fine echoes.",
        "Hepatic echogenicity is diffusely increased.",
        "The parenchyma is coarse and heterogeneous.",
    ),
    (
        "No focal lesion is identified.",
        "A well-defined anechoic cyst is seen in the right lobe.",
        "A hyperechoic nodule is noted in segment six.",
    ),
    (
        "The gallbladder wall is thin and smooth.",
        "Several mobile echogenic stones lie in the gallbladder.",
        "The gallbladder is contracted after a meal.",
    ),
    (
        "The common bile duct is not dilated.",
        "Intrahepatic ducts are mildly dilated.",
        "The portal vein shows normal hepatopetal flow.",
    ),
    (
        "The spleen and pancreas are unremarkable.",
        "The spleen is mildly enlarged.",
        "The pancreatic head is partly obscured by bowel gas.",
    ),
)
_CG10 = (
    ("transverse abdominal", "abdominal circumference"),
    ("transthalamic head", "biparietal diameter"),
    ("longitudinal femur", "femur length"),
)
_CG44_PARTS = (
    ("A lung window with", "Pleural view showing", "Intercostal scan with"),
    ("two separate B-lines", "confluent B-lines", "no B-lines", "scattered B-lines"),
    (
        "and a smooth pleural line",
        "and an irregular pleural line",
        "near a small consolidation",
        "with the liver on the right side",
    ),
)


def _reference_text(rng: random.Random, spec: SetSpec) -> str:
    if spec.task == "rg":
        return " ".join(rng.choice(options) for options in _REPORT_SENTENCES)
    if spec.id == "10":
        plane, measure = rng.choice(_CG10)
        return f"Phantom fetal scan in the {plane} plane used for {measure} measurement"
    return " ".join(rng.choice(part) for part in _CG44_PARTS)


def _prompt_cell(spec: SetSpec) -> str:
    """The HF ``prompt`` column: our own wording, with the published templates' placeholder and paragraph breaks."""
    if spec.task in ("dd", "vra"):
        opts = ", ".join(spec.labels)
        return (
            f"You are reading an ultrasound image of the {spec.anatomy}.\n\nOptions: {opts}\n\nAnswer with one option."
        )
    if spec.task in ("ll", "od", "kd"):
        return (
            "You are reading an ultrasound image about {anatomy_location}.\n\nWhere is the structure? "
            "Answer with one location word pair or 'not visible'."
        )
    if spec.task == "cve":
        return "You are reading an ultrasound image of the {anatomy_location}.\n\nGive the value as a number only."
    return "You are a sonographer describing an image of the {anatomy_location}.\n\nWrite the text only."


def _base_cells(spec: SetSpec, rng: random.Random, img_b64: str, row: int) -> dict[str, str]:
    cells = dict.fromkeys(HF_COLUMNS, "")
    cells.update(
        dataset_name=spec.dataset_name,
        img_data=img_b64,
        patient_id=f"P{rng.randint(1000, 9999)}" if row % 3 else "",
        prompt=_prompt_cell(spec),
        anatomy_location=spec.anatomy,
        demographic=repr({"age": rng.randint(18, 80)}) if row % 2 else "",
        notes="synthetic row" if row % 4 == 0 else "",
    )
    return cells


def _classification_cells(spec: SetSpec, label: str) -> dict[str, str]:
    options = [x.lower() for x in spec.labels] if spec.id == "anatomy" else list(spec.labels)
    return {
        "classification_task": spec.ctask,
        "class_label": repr({"Anatomy": label}) if spec.id == "anatomy" else label,
        "options": repr({spec.ctask: options}),
    }


def _make_rows(spec: SetSpec, n: int, seed: int, partners: Sequence[SetSpec]) -> list[_Row]:
    """The rows of one set; a shared set ('g23', ...) draws every column its partner tasks need, identically."""
    members = [spec, *partners]
    anchor = spec.share or f"{spec.task}:{spec.id}"
    rng = _rng(seed, "rows", anchor)
    labels: list[str] = []
    cls = next((m for m in members if m.labels), None)
    if cls is not None:
        labels = _balanced(rng, cls.labels, n)
    det = next((m for m in members if m.group == "seg"), None)
    cve = next((m for m in members if m.task == "cve"), None)
    rows: list[_Row] = []
    for i in range(n):
        cells_extra: dict[str, str] = {}
        row = _Row(cells={}, image=b"")
        if cls is not None:
            row.label = labels[i]
            if cls.id == "57" and cve is not None:  # fatty liver iff the fat value says so
                row.value = _measure_value(rng, "fat value")
                row.label = "1" if float(row.value) > 10 else "0"
            cells_extra.update(_classification_cells(cls, row.label))
        if det is not None:
            channel = det.channels[i % len(det.channels)]
            row.location = NOT_VISIBLE if rng.random() < 0.15 else rng.choice(SECTORS)
            cells_extra["seg_channel_name"] = channel
            cells_extra.update(_location_cells(rng, det, channel, row.location, i))
        if cve is not None:
            if row.value is None and not (cve.measure_key == "IMT" and rng.random() < 0.3):
                row.value = _measure_value(rng, cve.measure_key)
            cells_extra["measurement"] = _measure_cell(cve.measure_key, row.value, i)
        if spec.task in ("rg", "cg"):
            row.text = _reference_text(rng, spec)
            cells_extra["report" if spec.task == "rg" else "caption"] = row.text
        spot = _spot_for(rng, row.location) if row.location and row.location != NOT_VISIBLE else None
        row.image = _image_bytes(_np_rng(seed, "image", anchor, i), spec.image, spot)
        if spec.id == "37" and spec.task == "od" and i == 1:
            row.image = rows[0].image  # the same image twice, for two structures
        row.cells = _base_cells(spec, _rng(seed, "cells", anchor, i), base64.b64encode(row.image).decode(), i)
        row.cells.update(cells_extra)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The evalkit's prompts, built by its own build_prompt code read from the mirror


class _PandasShim:
    """build_prompt only calls ``pd.isna`` on a 'hint' cell (our rows have none)."""

    @staticmethod
    def isna(value: object) -> bool:
        return value is None or (isinstance(value, float) and value != value)


class KitPrompts:
    """Calls the evalkit's ``build_prompt`` methods, taken verbatim from the git mirror, on our rows."""

    def __init__(self, evalkit_git: Path) -> None:
        self.git_dir = evalkit_git
        self.sha = _git(evalkit_git, "rev-parse", "HEAD").strip()
        self._files = {Path(p).name: _git(evalkit_git, "show", f"HEAD:{p}") for p in _KIT_PROMPT_FILES}
        self._builders: dict[str, Callable[..., list[dict[str, str]]]] = {}
        for group, path in _KIT_FILES.items():
            self._builders[group] = self._load_build_prompt(_git(evalkit_git, "show", f"HEAD:{path}"), path)

    def _open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        name = os.path.basename(str(path))
        if name in self._files:  # the prompt JSON files, which build_prompt opens relative to the cwd
            return io.StringIO(self._files[name])
        return builtins.open(path, *args, **kwargs)

    def _load_build_prompt(self, source: str, where: str) -> Callable[..., list[dict[str, str]]]:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "build_prompt":
                segment = ast.get_source_segment(source, node, padded=True)
                if segment is None:
                    break
                namespace: dict[str, Any] = {
                    "json": json,
                    "pd": _PandasShim,
                    "open": self._open,
                    "toliststr": lambda s: [s],
                    "os": os,
                }
                exec(compile(textwrap.dedent(segment), f"{self.sha[:7]}:{where}", "exec"), namespace)
                func: Callable[..., list[dict[str, str]]] = namespace["build_prompt"]
                return func
        raise RuntimeError(f"no build_prompt in {where} of {self.git_dir}")

    def messages(self, group: str, key: str, line: dict[str, str | float], image_path: Path) -> list[dict[str, str]]:
        fake_self = _KitDataset(dataset_name=key, image_path=str(image_path))
        return self._builders[group](fake_self, line, group)


@dataclass
class _KitDataset:
    dataset_name: str
    image_path: str
    meta_only: bool = False

    def dump_image(self, line: dict[str, str | float]) -> str:
        return self.image_path


def _git(git_dir: Path, *args: str) -> str:
    proc = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {git_dir} failed: {proc.stderr.strip()}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# Answers


def _pick(rng: random.Random, menu: Sequence[tuple[int, Callable[[], Answer]]]) -> Answer:
    total = sum(w for w, _ in menu)
    x = rng.uniform(0, total)
    for weight, make in menu:
        x -= weight
        if x <= 0:
            return make()
    return menu[-1][1]()


def _cla_answer(rng: random.Random, spec: SetSpec, truth: str) -> Answer:
    others = [x for x in spec.labels if x != truth] or [truth]
    other = rng.choice(others)
    menu: list[tuple[int, Callable[[], Answer]]] = [
        (40, lambda: truth),
        (4, lambda: truth.upper()),
        (4, lambda: truth.lower()),
        (6, lambda: f"Based on the sonographic features, this is most consistent with {truth}."),
        (3, lambda: f"'{truth}'"),
        (12, lambda: other),
        (3, lambda: f"It could be {other} rather than {truth}."),
        (5, lambda: rng.choice(("Unable to determine from this image.", "Option B", "I think it is the second one"))),
        (8, lambda: rng.choice(KIT_FAILURES)),
        (2, lambda: ""),
    ]
    if spec.id in ("44", "57"):
        menu += [
            (4, lambda: rng.choice((f"{truth}.", f"Score {truth}", f"Label: {truth}", f"**{truth}**"))),
            (2, lambda: f"{truth}.0"),
            (2, lambda: f"Grade {truth}"),
        ]
    if spec.id == "40":
        menu += [(3, lambda: f"BI-RADS {truth}"), (2, lambda: "Category 4")]
    if spec.id == "74is_visible":
        menu += [(4, lambda: "not visible"), (2, lambda: "Not visible")]
    if spec.id == "03":
        menu += [(3, lambda: "fetal head"), (2, lambda: "maternal cervical region")]
    if spec.id == "anatomy":
        menu += [(3, lambda: truth.capitalize())]
    return _pick(rng, menu)


def _location_answer(rng: random.Random, truth: str) -> Answer:
    other = rng.choice([s for s in (*SECTORS, NOT_VISIBLE) if s != truth])
    synonyms = ("top left", "bottom right", "centre", "middle", "central region", "top", "lower middle")
    menu: list[tuple[int, Callable[[], Answer]]] = [
        (40, lambda: truth),
        (4, lambda: truth.upper()),
        (3, lambda: truth.title()),
        (4, lambda: "lower center"),
        (4, lambda: "not visible"),
        (3, lambda: "Not visible."),
        (6, lambda: rng.choice(synonyms)),
        (5, lambda: f"The structure is located in the {truth} part of the image."),
        (12, lambda: other),
        (2, lambda: "middle center"),
        (6, lambda: rng.choice(KIT_FAILURES)),
        (2, lambda: ""),
    ]
    return _pick(rng, menu)


def _number_text(x: float, key: str) -> str:
    return str(int(round(x))) if key == "fat value" else f"{x:.2f}" if key == "IMT" else f"{x:.1f}"


def _cve_answer(rng: random.Random, spec: SetSpec, truth: float | None) -> Answer:
    lo, hi = _CVE_RANGES[spec.measure_key]
    base = truth if truth is not None else (lo + hi) / 2
    near = min(hi * 1.1, max(0.0, base + rng.gauss(0, (hi - lo) * 0.12)))
    k = spec.measure_key
    menu: list[tuple[int, Callable[[], Answer]]] = [
        (20, lambda: _number_text(base, k)),
        (25, lambda: _number_text(near, k)),
        (3, lambda: f"{_number_text(near, k)} mm"),
        (3, lambda: f"{_number_text(near, k)}%"),
        (2, lambda: "about 12.5%"),
        (2, lambda: f"{near / 10:.1f} cm"),
        (3, lambda: f"{int(near)}-{int(near) + 5}%"),
        (4, lambda: rng.choice(("null", "NULL", "Null"))),
        (4, lambda: rng.choice((f"{hi * 2:.1f}", "0.55", "999"))),
        (6, lambda: rng.choice(KIT_FAILURES)),
        (5, lambda: f"The estimated value is approximately {_number_text(near, k)}."),
        (2, lambda: ""),
    ]
    return _pick(rng, menu)


def _text_answer(rng: random.Random, spec: SetSpec, ref: str) -> Answer:
    words = ref.split()

    def mutated() -> str:
        out = [w for w in words if rng.random() > 0.2]
        return " ".join(out) or ref

    generic = (
        "Ultrasound image of the abdomen without obvious abnormality."
        if spec.task == "rg"
        else "Ultrasound image showing the region of interest"
    )
    menu: list[tuple[int, Callable[[], Answer]]] = [
        (25, lambda: ref),
        (25, mutated),
        (15, lambda: generic),
        (5, lambda: ref.lower()),
        (5, lambda: f"Caption: {ref}"),
        (5, lambda: rng.choice(KIT_FAILURES)),
        (2, lambda: ""),
    ]
    return _pick(rng, menu)


# Per model: datasets answered in one fixed way, for spot checks by hand ("exact" = the truth as the option text).
_FIXED: dict[str, dict[tuple[str, str], str]] = {
    "alpha": {
        ("dd", "21"): "exact",
        ("vra", "69"): "exact",
        ("ll", "17"): "exact",
        ("od", "38"): "exact",
        ("cve", "18"): "exact",
        ("cg", "10"): "exact",
        ("dd", "66"): "other",
        ("vra", "53"): "exact",
    },
    "beta": {("od", "13"): "exact"},
    "gamma": {},
}


def _answer(model: str, seed: int, spec: SetSpec, row: _Row, i: int) -> Answer:
    rng = _rng(seed, "answer", model, spec.task, spec.id, i)
    fixed = _FIXED.get(model, {}).get((spec.task, spec.id))
    if fixed == "exact":
        if spec.task in ("dd", "vra"):
            return row.label
        if spec.task in ("ll", "od", "kd"):
            return row.location
        if spec.task == "cve":
            return "null" if row.value is None else _number_text(row.value, spec.measure_key)
        return row.text
    if fixed == "other":
        return next(x for x in spec.labels if x != row.label)
    if spec.task in ("dd", "vra"):
        return _cla_answer(rng, spec, row.label)
    if spec.task in ("ll", "od", "kd"):
        return _location_answer(rng, row.location)
    if spec.task == "cve":
        return _cve_answer(rng, spec, row.value)
    return _text_answer(rng, spec, row.text)


# ---------------------------------------------------------------------------------------------------------------
# Faults


@dataclass(frozen=True)
class Fault:
    """A file-level fault in one model's kit records, and what the official pipeline does with it."""

    group: str
    key: str
    row: int
    kind: str  # missing / json_number / null
    value: int | float | None = None
    effect: str = ""

    def describe(self) -> str:
        what = {
            "missing": "record missing",
            "json_number": f"response is the JSON number {self.value!r}",
            "null": "response is JSON null",
        }[self.kind]
        return f"{self.group}/{self.key} row {self.row}: {what} -> {self.effect}"


def _faults(model: str, rows: int) -> tuple[Fault, ...]:
    if model == "beta":
        mid = rows // 2
        return (
            Fault("cla", "25", 3, "missing", effect="cla scorer: length mismatch, dataset 25 skipped for beta"),
            Fault("cla", "69", 2, "json_number", 3, effect="stage (a) drops the line; cla scorer skips 69"),
            Fault("cla", "21", 4, "json_number", 0, effect="stage (a) makes JSON 0 an empty answer: scored wrong"),
            Fault(
                "seg",
                "13",
                mid,
                "missing",
                effect=f"seg scorer joins by row order: rows after {mid} meet the next row's truth",
            ),
            Fault(
                "measurement",
                "18",
                3,
                "json_number",
                42.5,
                effect="stage (a) drops the line; later rows meet the next row's truth",
            ),
            Fault("measurement", "57", 1, "json_number", 0, effect="stage (a) makes JSON 0 'null': not scored"),
            Fault("report", "39", min(7, rows - 1), "null", effect="after the first five rows: scored as ''"),
        )
    if model == "gamma":
        return (
            Fault(
                "report",
                "39",
                2,
                "null",
                effect="null in the first five records: the official report scorer crashes, losing every RG "
                "and CG result of every model in the run (gamma is scored in a run of its own)",
            ),
        )
    return ()


# ---------------------------------------------------------------------------------------------------------------
# The world


@dataclass(frozen=True)
class ModelFiles:
    name: str
    base_dir: Path  # BASE/{cla,seg,measurement,report}/<key>/<model>/*.jsonl
    answers_file: Path  # answers-<model>.jsonl keyed by u2eval case id
    faults: tuple[Fault, ...]
    official_run: str  # the official run it is scored in ('main' or 'gamma')

    def describe_faults(self) -> list[str]:
        return [f.describe() for f in self.faults] or ["none (well-formed everywhere, all RG/CG scoreable)"]


@dataclass(frozen=True)
class DatasetEntry:
    task: str
    id: str
    group: str
    key: str
    hf_file: Path
    first_row: int  # index of the set's first data row in its HF file
    rows: int
    share: str


@dataclass(frozen=True)
class World:
    root: Path
    hf_dir: Path
    image_cache: Path
    seed: int
    rows_per_dataset: int
    evalkit_repo: Path
    evalkit_sha: str
    models: tuple[ModelFiles, ...]
    datasets: tuple[DatasetEntry, ...]
    # (model, task, dataset id) -> (expected official value, why): hand-computed spot checks
    checks: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict)

    def model(self, name: str) -> ModelFiles:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


# The fourth is named as the model the official scorers treat apart: they remove the first space of its answers.
MODELS = ("alpha", "beta", "gamma", "LLaVA-1.5-13B-HF")


def _hf_files(rows_by_set: dict[SetSpec, list[_Row]]) -> Iterator[tuple[Path, list[tuple[SetSpec, list[_Row]]]]]:
    by_file: dict[Path, list[tuple[SetSpec, list[_Row]]]] = {}
    for spec, rows in rows_by_set.items():
        by_file.setdefault(Path(TASK_FOLDERS[spec.task]) / f"{_file_stem(spec)}.tsv", []).append((spec, rows))
    yield from sorted(by_file.items())


def _write_tsv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(HF_COLUMNS)
        for row in rows:
            writer.writerow([row[c] for c in HF_COLUMNS])


def _explanation_row() -> dict[str, str]:
    """The root explanation file's one row (its img_data / seg_data cells are 20 / 32 characters, as published)."""
    return {
        "dataset_name": "Example dataset name",
        "img_data": "base64 encoded image",
        "patient_id": "patient id",
        "prompt": "prompt used for the assessment",
        "anatomy_location": "anatomical location",
        "demographic": "demographics",
        "classification_task": "type of classification task",
        "class_label": "classification label",
        "options": "classification options",
        "seg_data": "base64 encoded segmentation mask",
        "seg_channel_name": "segmentation channel name",
        "gt_bbox": "ground truth bounding box",
        "keypoints": "anatomical keypoints",
        "measurement": "clinical measurements",
        "caption": "caption",
        "report": "report text",
        "notes": "notes",
    }


def _prepare_root(root: Path) -> None:
    if root.exists() and any(root.iterdir()) and not (root / "world.json").exists():
        raise RuntimeError(f"{root} is not empty and holds no world.json: refusing to overwrite it")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "world.json").write_text('{"status": "being written"}\n', encoding="utf-8")  # marks the folder as ours


def _kit_line(row: _Row) -> dict[str, str | float]:
    """The internal-TSV row build_prompt sees (the columns it reads), an empty cell as pandas reads it: NaN."""
    columns = ("img_data", "anatomy_location", "seg_channel_name", "keypoints")
    return {c: row.cells[c] if row.cells[c] != "" else float("nan") for c in columns}


def _case_id(task: str, stem: str, index: int, image: bytes) -> str:
    return f"{task}/{stem}/{index}/{hashlib.sha256(image).hexdigest()[:8]}"


def _od_exact_scored(answer: str) -> str:
    """What the official pipeline makes of an exact OD location answer (facts 10.2, 10.3)."""
    return {"lower center": "center", NOT_VISIBLE: ""}.get(answer, answer)


def _spot_checks(rows_by_set: dict[SetSpec, list[_Row]], rows: int) -> dict[tuple[str, str, str], tuple[float, str]]:
    by_id = {(s.task, s.id): r for s, r in rows_by_set.items()}
    vra53 = [r.label for r in by_id[("vra", "53")]]
    ll17 = [r.location for r in by_id[("ll", "17")]]
    od38 = [r.location for r in by_id[("od", "38")]]
    od13 = [r.location for r in by_id[("od", "13")]]
    mid = rows // 2
    # beta's 13: the official joins the n-1 answers with the first n-1 truths: exact answers meet the next truth.
    shifted = [od13[i] if i < mid else od13[i + 1] for i in range(rows - 1)]
    shifted_ok = sum(_od_exact_scored(a) == t for a, t in zip(shifted, od13[: rows - 1], strict=True))
    return {
        ("alpha", "dd", "21"): (1.0, "every answer the exact label"),
        ("alpha", "vra", "69"): (1.0, "every answer the exact label"),
        ("alpha", "dd", "66"): (0.0, "every answer the other label"),
        ("alpha", "vra", "53"): (
            round(sum(x != "None" for x in vra53) / rows, 4),
            "exact labels; pandas reads the label 'None' as NaN, so those rows never match",
        ),
        ("alpha", "ll", "17"): (
            round(sum(x != "lower center" for x in ll17) / rows, 4),
            "exact locations; 'lower center' is scored as 'center' (keyword order)",
        ),
        ("alpha", "od", "38"): (
            round(sum(_od_exact_scored(x) == x for x in od38) / rows, 4),
            "exact locations; 'lower center' -> center, OD 'not visible' matches no option",
        ),
        ("alpha", "cve", "18"): (0.0, "every answer the exact EF: RMSE 0"),
        ("alpha", "cg", "10"): (100.0, "every caption the reference: BLEU-4 100"),
        ("beta", "od", "13"): (
            round(shifted_ok / (rows - 1), 4),
            f"exact answers, record {mid} missing: the rest meet the next row's truth",
        ),
    }


def _write_model(
    model: str,
    root: Path,
    seed: int,
    rows_by_set: dict[SetSpec, list[_Row]],
    entry_of: dict[tuple[str, str], DatasetEntry],
    kit: KitPrompts,
) -> ModelFiles:
    """One model's kit-layout prediction files and its answers keyed by u2eval case id."""
    faults = _faults(model, len(next(iter(rows_by_set.values()))))
    base = root / "predictions" / model
    cache = root / "kit_cache" / "images"
    answers: list[dict[str, Any]] = []
    for spec, rows in rows_by_set.items():
        entry = entry_of[(spec.task, spec.id)]
        records = []
        for i, row in enumerate(rows):
            answer: Answer = _answer(model, seed, spec, row, i)
            fault = next((f for f in faults if (f.group, f.key, f.row) == (spec.group, spec.key, i)), None)
            if fault is not None and fault.kind == "missing":
                continue  # no record, and no line in the answers file
            if fault is not None:
                answer = fault.value if fault.kind == "json_number" else None
            msgs = kit.messages(spec.group, spec.key, _kit_line(row), _dump_like_kit(row.cells["img_data"], cache))
            seconds = round(_rng(seed, "time", model, spec.group, spec.key, i).uniform(0.8, 9.0), 3)
            records.append({"id": str(i), "question": msgs, "response": answer, "time": seconds})
            case_id = _case_id(spec.task, entry.hf_file.stem, entry.first_row + i, row.image)
            answers.append({"case_id": case_id, "answer": answer})
        out = base / spec.group / spec.key / model / f"{model}_combined_results.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    answers_file = root / f"answers-{model}.jsonl"
    answers_file.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers), encoding="utf-8")
    run = "gamma" if any(f.kind == "null" and f.row < 5 for f in faults) else "main"
    return ModelFiles(model, base, answers_file, faults, run)


def write_world(
    root: Path, *, seed: int = 0, rows_per_dataset: int = 12, evalkit_repo: Path = DEFAULT_EVALKIT_REPO
) -> World:
    """Write the HF folder, the kit-layout predictions and the keyed answers of alpha, beta and gamma."""
    if rows_per_dataset < 8:
        raise ValueError("rows_per_dataset must be at least 8 (beta's null report sits after the first five rows)")
    root = root.resolve()
    _prepare_root(root)
    kit = KitPrompts(evalkit_repo)
    hf_dir, cache = root / "hf", root / "kit_cache" / "images"
    cache.mkdir(parents=True)

    rows_by_set: dict[SetSpec, list[_Row]] = {}
    for spec in SETS:
        partners = [s for s in SETS if spec.share and s.share == spec.share and s is not spec]
        rows_by_set[spec] = _make_rows(spec, rows_per_dataset, seed, partners)

    entries: list[DatasetEntry] = []
    for rel, members in _hf_files(rows_by_set):
        flat: list[dict[str, str]] = []
        for spec, rows in members:
            entries.append(
                DatasetEntry(spec.task, spec.id, spec.group, spec.key, hf_dir / rel, len(flat), len(rows), spec.share)
            )
            flat.extend(r.cells for r in rows)
        _write_tsv(hf_dir / rel, flat)
    _write_tsv(hf_dir / EXPLANATION_FILE, [_explanation_row()])

    entry_of = {(e.task, e.id): e for e in entries}
    models = tuple(_write_model(model, root, seed, rows_by_set, entry_of, kit) for model in MODELS)
    world = World(
        root,
        hf_dir,
        cache,
        seed,
        rows_per_dataset,
        evalkit_repo,
        kit.sha,
        models,
        tuple(entries),
        _spot_checks(rows_by_set, rows_per_dataset),
    )
    _write_manifest(world)
    return world


def _write_manifest(world: World) -> None:
    manifest = {
        "seed": world.seed,
        "rows_per_dataset": world.rows_per_dataset,
        "evalkit_repo": str(world.evalkit_repo),
        "evalkit_sha": world.evalkit_sha,
        "hf_dir": str(world.hf_dir),
        "models": [
            {
                "name": m.name,
                "base_dir": str(m.base_dir),
                "answers_file": str(m.answers_file),
                "official_run": m.official_run,
                "faults": m.describe_faults(),
            }
            for m in world.models
        ],
        "datasets": [
            {
                "task": e.task,
                "id": e.id,
                "official": f"{e.group}/{e.key}",
                "hf_file": str(e.hf_file.relative_to(world.hf_dir)),
                "first_row": e.first_row,
                "rows": e.rows,
                "shared_rows": e.share,
            }
            for e in world.datasets
        ],
        "spot_checks": [
            {"model": m, "task": t, "dataset": d, "expected": v, "why": why}
            for (m, t, d), (v, why) in world.checks.items()
        ],
    }
    (world.root / "world.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
