"""The text cells of the synthetic set (``u2eval.data.synth.generate``): reports, captions and prompts, in our
own words, drawn with the portable random numbers of ``synth_images``."""

from __future__ import annotations

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import DatasetSpec, TaskSpec
from u2eval.data.synth.images import Rng

# ---------------------------------------------------------------------------------------------- texts

_REPORT_LIVER = (
    "The liver is normal in size with a smooth contour and homogeneous echotexture.",
    "The liver is enlarged, with a right lobe of {a} cm, and shows diffusely increased echogenicity.",
    "The liver parenchyma is bright with attenuation of the deep beam, in keeping with fatty infiltration.",
    "The liver shows a coarse echotexture and a mildly nodular surface.",
    "The liver is normal in size; a {b} x {c} cm hyperechoic nodule is seen in the right lobe.",
)
_REPORT_DUCTS = (
    "The intrahepatic bile ducts are not dilated.",
    "The portal vein is patent and measures {d} mm.",
    "The common bile duct measures {e} mm.",
)
_REPORT_GALLBLADDER = (
    "The gallbladder is well distended with a thin wall and no stones.",
    "The gallbladder contains a {b} cm echogenic stone with posterior acoustic shadowing.",
    "The gallbladder wall is thickened to {e} mm without pericholecystic fluid.",
    "The gallbladder is contracted after a meal and cannot be fully assessed.",
    "A {d} mm polyp is attached to the gallbladder wall.",
)
_REPORT_PANCREAS = (
    "The pancreas is normal in size and echogenicity.",
    "The pancreatic body is partly obscured by bowel gas; the visible parts are unremarkable.",
    "The pancreatic duct is mildly dilated to {e} mm.",
)
_REPORT_SPLEEN = (
    "The spleen is normal in size, measuring {f} cm.",
    "The spleen is enlarged, measuring {g} cm, with homogeneous echotexture.",
    "The spleen is unremarkable.",
)
_REPORT_CLOSING = ("", "No free fluid is seen in the abdomen.", "Both kidneys are normal in size and position.")

_FPUS_PLANES = (
    "abdominal circumference",
    "biparietal diameter",
    "femur length",
    "non-standard",
)
_FPUS_TEMPLATES = (
    "Fetal phantom in the {plane} plane, head {head}, with the {side} facing the probe.",
    "Ultrasound of a fetal phantom showing the {plane} plane; the head points {head}.",
    "A {plane} view of the fetal phantom, {side} towards the transducer, head {head}.",
)
_BLINE_TEMPLATES = (
    "Lung ultrasound with {n} B-lines and a {pleura} pleural line.",
    "Lung ultrasound showing A-lines only and a smooth pleural line; no B-lines.",
    "Confluent B-lines with a {pleura} pleural line and a small subpleural consolidation.",
    "Lung frame with {n} separate B-lines arising from a {pleura} pleural line.",
)
NOTES = (
    "synthetic frame; pixels are random speckle",
    "frame selected from a cine loop",
    "annotation reviewed by a second reader",
    "image cropped to the sector",
    "",
)


def _fill(template: str, rng: Rng) -> str:
    values = {
        "a": rng.uniform(15.5, 19.5, 1),
        "b": rng.uniform(0.5, 2.5, 1),
        "c": rng.uniform(0.4, 1.8, 1),
        "d": rng.randint(3, 13),
        "e": rng.uniform(2.0, 7.0, 1),
        "f": rng.uniform(8.0, 11.5, 1),
        "g": rng.uniform(12.5, 16.0, 1),
    }
    return template.format(**values)


def report_text(rng: Rng) -> str:
    parts = [
        rng.choice(_REPORT_LIVER),
        rng.choice(_REPORT_DUCTS),
        rng.choice(_REPORT_GALLBLADDER),
        rng.choice(_REPORT_PANCREAS),
        rng.choice(_REPORT_SPLEEN),
        rng.choice(_REPORT_CLOSING),
    ]
    return " ".join(_fill(p, rng) for p in parts if p)


def caption_text(spec: DatasetSpec, rng: Rng) -> str:
    if spec.id == "10":
        return rng.choice(_FPUS_TEMPLATES).format(
            plane=rng.choice(_FPUS_PLANES), head=rng.choice(("down", "up")), side=rng.choice(("back", "front"))
        )
    if spec.id == "44":
        return rng.choice(_BLINE_TEMPLATES).format(
            n=rng.choice(("two", "three", "four", "several")),
            pleura=rng.choice(("smooth", "irregular", "thickened", "fragmented")),
        )
    return f"Ultrasound image of the {spec.anatomy} with {rng.choice(('no', 'a small', 'a clear'))} finding."


def prompt_text(task: TaskSpec, spec: DatasetSpec) -> str:
    """Our own wording (not the official prompts), with the literal `{anatomy_location}` placeholder."""
    intro = "You are reviewing an ultrasound image of the {anatomy_location}."
    where = ", ".join(LOCATION_OPTIONS)
    if task.capability == "classification":
        topic = (spec.classification_task or "class").replace("_", " ")
        reply = "the single number" if spec.int_labels else "the chosen option exactly as written"
        body = f"Which {topic} does it show? Options: {', '.join(spec.labels)}.\n\nReply with {reply} only."
    elif task.scenario_source == "keypoints":
        body = f"Where is the {spec.keypoint} in the image? Choose from: {where}.\n\nReply with the location only."
    elif task.capability == "detection":
        thing = spec.channel or "structure"
        body = f"Where is the {thing} in the image? Choose from: {where}.\n\nReply with the location only."
    elif task.capability == "regression":
        lo, hi = spec.value_range or (0.0, 0.0)
        unit = f" ({spec.unit})" if spec.unit else ""
        null = " Reply null if it cannot be measured." if spec.nullable else ""
        body = (
            f"Estimate the {spec.quantity}{unit}: a number from {lo:g} to {hi:g}.{null}\n\nReply with the number only."
        )
    elif task.truth_column == "report":
        body = (
            "Write a short report on the liver, gallbladder, pancreas and spleen: size, contour, "
            "echotexture and any abnormal finding.\n\nReply with the report text only."
        )
    else:
        body = "Describe the image in one sentence, naming the main structures.\n\nReply with the caption only."
    return f"{intro}\n\n{body}"
