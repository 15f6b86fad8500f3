"""A built-in synthetic breast-ultrasound video cohort, for demos, tutorials and tests without patient data.

`make_demo_cohort` writes one multi-frame ultrasound DICOM per patient (JPEG Baseline, YBR_FULL_422, as scanners
write them), a PNG still for the static-image models, `manifest.csv` and a ground-truth sidecar `demo_truth.csv`.

Design (a known truth against which the whole pipeline, Grad-CAM included, can be validated): each loop is a
lateral sweep over a hypoechoic breast tumour. The label-carrying evidence is visible in only part of the sweep:
in positives a metastatic-looking node (enlarged, round, hypoechoic, with an echogenic rim, 11-20 mm across)
crosses the scan plane during 30-40 % of the frames (`NODE_WINDOW`), at a random point of the loop; in negatives a
normal node (oval, echogenic hilum) does the same in about half of the patients, and in a third of all loops
an anechoic cyst crosses the plane as a distractor. Tumour size is weakly larger in positives (a weak cue in
every frame). The evidence is large and contrasted enough to be seen at 48 px (the CPU demo's input).
`demo_truth.csv` records where (`node_box`, x0,y0,x1,y1 in original pixels, the union over the visible frames)
and when (`node_first_frame`, `node_last_frame`, 0-based loop frames) the evidence is visible.

The still (two thirds of the patients) is what a sonographer saves: the frame in which the tumour is centred,
its whole extent in view (`keyframe`), chosen from the probe position alone, independent of the label and of
the node's frames. It shows the node when the two coincide (about a third of the positives), so the static
model is a fair baseline that sometimes sees the evidence, while a video model can find it in every loop.

Splits: `train`, `test_a` (scanner A) and `test_b` (scanner B, the external hospital); each test split holds
`test_share` of the patients (15 %, about the study's proportions; the CPU demo recipe tests a quarter in each,
for the power of the paired comparison), with 40 % positives in every split.

Two scanners, both high-frequency linear arrays as breast ultrasound uses, differ in screen layout, field of
view, depth (so a millimetre spans fewer pixels on B), gain, dynamic range, noise and speckle size, and scanner B
omits the SequenceOfUltrasoundRegions so that the crop has to find the image itself. Headers and burned-in banners
carry FAKE identities ("DEMO^PATIENT^7") for privacy tests.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from alnvid.errors import AlnvidError
from alnvid.utils import atomic_path

MANIFEST_NAME = "manifest.csv"
TRUTH_NAME = "demo_truth.csv"
READERS = {"junior": 0.70, "senior": 0.78, "expert": 0.85}  # expected accuracy of each sonographer
MANIFEST_COLUMNS = (
    "patient_id", "path", "label", "split", "site", "age", "tumour_size_mm", "birads", "still_path",
    *(f"reader_{name}" for name in READERS), *(f"reader_{name}_score" for name in READERS),
)
TRUTH_COLUMNS = (
    "patient_id", "label", "node_kind", "node_first_frame", "node_last_frame", "node_box", "keyframe",
    "tumour_box", "region_box", "scanner",
)
MIN_PATIENTS = 6
MIN_FRAMES = 8
MIN_FRAME_SIZE = (96, 128)
NODE_WINDOW = (0.3, 0.4)
"""Share of the sweep during which the node crosses the scan plane."""
TEST_SHARE = 0.15
"""Share of the patients in each test split (test_a, scanner A; test_b, scanner B); the rest is 'train'."""


@dataclass(frozen=True)
class Scanner:
    """Acquisition settings of one demo scanner (one per hospital)."""

    model: str
    site: str
    institution: str
    probe: str
    layout: str  # the vendor's screen: "banner" (patient on a dark top bar) or "lines" (three lines of text)
    image_x: tuple[float, float]  # left and right edges of the image region, as fractions of the frame width
    depth_mm: float
    gain_db: float
    dynamic_range_db: float
    noise_db: float  # electronic noise relative to glandular tissue at the skin
    speckle_sigma: tuple[float, float]  # axial, lateral point-spread (pixels)
    fps: float
    writes_regions: bool


SCANNER_A = Scanner("alnvid demo scanner A", "hospital_A", "DEMO GENERAL HOSPITAL A", "L12-5", "banner",
                    (0.13, 0.86), 40.0, 0.0, 58.0, -40.0, (0.8, 1.7), 20.0, True)
SCANNER_B = Scanner("alnvid demo scanner B", "hospital_B", "DEMO UNIVERSITY HOSPITAL B", "L18-4", "lines",
                    (0.17, 0.83), 45.0, 3.0, 62.0, -34.0, (1.0, 2.1), 25.0, False)


@dataclass(frozen=True)
class DemoCase:
    """One synthetic patient: what goes into the manifest and the DICOM header (all identities are fake)."""

    number: int
    patient_id: str
    split: str
    label: int
    scanner: Scanner
    age: int
    tumour_size_mm: float
    birads: str
    has_still: bool
    node_kind: str  # "metastatic", "normal" or "none"
    study_date: date
    birth_date: date
    accession: str
    readers: dict[str, tuple[int, int]] | None  # name -> (call 0/1, score 1-5), test_b only

    @property
    def fake_name(self) -> str:
        return f"DEMO^PATIENT^{self.number}"

    @property
    def fake_id(self) -> str:
        return f"DEMO{self.number:04d}"


@dataclass(frozen=True)
class DemoVideo:
    """A rendered video (before JPEG) with where the evidence is; boxes are (x0, y0, x1, y1), x1/y1 exclusive."""

    case: DemoCase
    frames: np.ndarray  # (F, H, W, 3) uint8
    region_box: tuple[int, int, int, int]
    keyframe: int
    tumour_box: tuple[int, int, int, int]
    node_frames: tuple[int, int] | None  # first and last frame (inclusive) in which the node is visible
    node_box: tuple[int, int, int, int] | None  # union over node_frames


def make_demo_cohort(out_dir: str | Path, patients: int = 60, frames: int = 32, seed: int = 0, *,
                     frame_size: tuple[int, int] = (320, 400), jpeg_quality: int = 90,
                     test_share: float = TEST_SHARE) -> Path:
    """Write the demo cohort into `out_dir` and return the path of its manifest.

    `frame_size` is (rows, columns); `test_share` is the share of the patients in each test split. Output:
    `videos/P001.dcm`..., `stills/P001.png`... (about two thirds of the patients; the others must take keyframes
    from the video), `manifest.csv` and `demo_truth.csv`. Deterministic for a given seed and test share.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AlnvidError("the demo cohort output is a file, not a folder", path=out_dir,
                          fix="pass a new or existing folder.")
    if not 1 <= jpeg_quality <= 100:
        raise AlnvidError(f"jpeg_quality must be 1-100, got {jpeg_quality}", fix="use e.g. 90.")
    manifest_rows, truth_rows = [], []
    for video in render_demo_videos(patients, frames, seed, frame_size=frame_size, test_share=test_share):
        case = video.case
        encoded = [_encode_jpeg(frame, jpeg_quality) for frame in video.frames]
        dicom_rel = f"videos/{case.patient_id}.dcm"
        _write_dicom(out_dir / dicom_rel, encoded, video, seed)
        still_rel = ""
        if case.has_still:
            still_rel = f"stills/{case.patient_id}.png"
            _write_still(out_dir / still_rel, encoded[video.keyframe])
        manifest_rows.append(_manifest_row(case, dicom_rel, still_rel))
        truth_rows.append(_truth_row(video))
    _write_csv(out_dir / TRUTH_NAME, TRUTH_COLUMNS, truth_rows)
    manifest = out_dir / MANIFEST_NAME
    _write_csv(manifest, MANIFEST_COLUMNS, manifest_rows)
    return manifest


def test_split_size(patients: int, test_share: float = TEST_SHARE) -> int:
    """Patients in each test split of a cohort of `patients` (at least two, so each split gets both classes)."""
    return max(2, round(test_share * patients))


def plan_demo_cases(patients: int, seed: int, test_share: float = TEST_SHARE) -> list[DemoCase]:
    """Draw splits, labels, clinical variables and reader calls; each split gets both classes."""
    if patients < MIN_PATIENTS:
        raise AlnvidError(f"a demo cohort needs at least {MIN_PATIENTS} patients (two per split), got {patients}",
                          fix=f"use --patients {MIN_PATIENTS} or more, or leave it out for the settings' own size.")
    n_test = test_split_size(patients, test_share)
    if not 0 < test_share < 0.5 or patients - 2 * n_test < 2:
        raise AlnvidError(f"a test share of {test_share:g} leaves {patients - 2 * n_test} of {patients} patients "
                          "for training", fix="use a --test-share between 0 and 0.5 that leaves at least two.")
    rng = np.random.default_rng([seed, 1])
    sizes = {"train": patients - 2 * n_test, "test_a": n_test, "test_b": n_test}
    splits, labels = [], []
    for split, size in sizes.items():
        positives = int(np.clip(round(0.4 * size), 1, size - 1))
        splits += [split] * size
        labels += list(rng.permutation([1] * positives + [0] * (size - positives)))
    order = rng.permutation(patients)  # patient numbers are not grouped by split
    shared = rng.normal(size=patients)  # case difficulty common to all readers
    cases = []
    for number, slot in enumerate(order, start=1):
        split, label = splits[slot], int(labels[slot])
        scanner = SCANNER_B if split == "test_b" else SCANNER_A
        size = float(np.clip(rng.normal(15.0 + 5.0 * label, 6.0), 6.0, 35.0))
        suspicion = 0.7 * label + 0.06 * (size - 17.0) + rng.normal(0.0, 0.8)
        birads = ("4a", "4b", "4c", "5")[int(np.digitize(suspicion, (-0.4, 0.3, 1.0)))]
        age = int(np.clip(round(rng.normal(54.0, 11.0)), 28, 88))
        study_date = date(2019, 1, 7) + timedelta(days=int(rng.integers(0, 1400)))
        birth_date = study_date - timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
        node_kind = "metastatic" if label else ("normal" if rng.random() < 0.55 else "none")
        readers = None
        if split == "test_b":
            readers = {}
            for name, accuracy in READERS.items():
                separation = 2.0 * float(ndtri(accuracy))
                latent = separation * (label - 0.5) + math.sqrt(0.3) * shared[number - 1] \
                    + math.sqrt(0.7) * rng.normal()
                score = 1 + int(np.digitize(latent, (-0.9, 0.0, 0.6, 1.3)))
                readers[name] = (int(score >= 3), score)
        cases.append(DemoCase(
            number=number, patient_id=f"P{number:03d}", split=split, label=label, scanner=scanner, age=age,
            tumour_size_mm=round(size, 1), birads=birads, has_still=False, node_kind=node_kind,
            study_date=study_date, birth_date=birth_date, accession=f"ACC{rng.integers(10**7, 10**8)}",
            readers=readers))
    without_still = set(rng.choice(patients, size=patients // 3, replace=False).tolist())
    return [replace(case, has_still=case.number - 1 not in without_still) for case in cases]


def render_demo_videos(patients: int = 60, frames: int = 32, seed: int = 0, *, frame_size: tuple[int, int] = (320, 400),
                       test_share: float = TEST_SHARE) -> Iterator[DemoVideo]:
    """Render every patient's video (uint8 RGB, before JPEG compression), one at a time."""
    if frames < MIN_FRAMES:
        raise AlnvidError(f"a demo video needs at least {MIN_FRAMES} frames, got {frames}",
                          fix="use --frames 16 or more (32 is the default).")
    rows, cols = frame_size
    if rows < MIN_FRAME_SIZE[0] or cols < MIN_FRAME_SIZE[1]:
        raise AlnvidError(f"demo frames must be at least {MIN_FRAME_SIZE[0]}x{MIN_FRAME_SIZE[1]} pixels (rows x "
                          f"columns), got {rows}x{cols}", fix="use the default 320x400.")
    cases = plan_demo_cases(patients, seed, test_share)
    renderers = {scanner.model: _Renderer(scanner, rows, cols, frames, np.random.default_rng([seed, 2, i]))
                 for i, scanner in enumerate((SCANNER_A, SCANNER_B))}
    for case in cases:
        yield renderers[case.scanner.model].render(case, np.random.default_rng([seed, 3, case.number]))


# ---------------------------------------------------------------------------------------------- rendering


class _Geometry:
    """Where the (linear-array) image region lies in the frame; beam space (depth x lateral) maps onto it 1:1."""

    def __init__(self, scanner: Scanner, rows: int, cols: int):
        self.banner = max(12, round((0.075 if scanner.layout == "banner" else 0.1) * rows))
        x0, x1 = round(scanner.image_x[0] * cols), round(scanner.image_x[1] * cols)
        y0, y1 = self.banner + max(2, round(0.02 * rows)), rows - max(2, round(0.02 * rows))
        self.depth_px, self.lines = y1 - y0, x1 - x0
        self.box = (x0, y0, x1, y1)

    def place(self, beam: np.ndarray, background: np.ndarray) -> np.ndarray:
        """Put beam-space grey images (F, depth, lines) into copies of the (H, W, 3) background."""
        out = np.empty((len(beam), *background.shape), np.uint8)
        out[:] = background
        x0, y0, x1, y1 = self.box
        out[:, y0:y1, x0:x1] = np.repeat(_to_uint8(beam)[..., None], 3, axis=-1)
        return out

    def image_box(self, depth: np.ndarray, lateral: np.ndarray) -> tuple[int, int, int, int]:
        """Bounding box in frame pixels of beam-space points, clipped to the region."""
        bx0, by0, bx1, by1 = self.box
        x, y = bx0 + lateral, by0 + depth
        return (int(np.clip(np.floor(x.min()), bx0, bx1)), int(np.clip(np.floor(y.min()), by0, by1)),
                int(np.clip(np.ceil(x.max()) + 1, bx0, bx1)), int(np.clip(np.ceil(y.max()) + 1, by0, by1)))


class _Renderer:
    """Renders the videos of one scanner; speckle and texture fields are drawn once and cropped per patient."""

    def __init__(self, scanner: Scanner, rows: int, cols: int, frames: int, rng: np.random.Generator):
        self.scanner, self.rows, self.cols, self.frames = scanner, rows, cols, frames
        self.geometry = _Geometry(scanner, rows, cols)
        self.px_per_mm = self.geometry.depth_px / scanner.depth_mm
        depth, lines = self.geometry.depth_px, self.geometry.lines
        self.sweep = round(0.35 * lines)  # lateral probe travel over the loop
        self.jitter = 2  # axial wobble (breathing, pressure) in pixels
        self.pano = (depth + 2 * self.jitter, lines + self.sweep + 8)
        bank = (2 * self.pano[0] + 8, 2 * self.pano[1] + 8)
        self.speckle = _complex_speckle(rng, bank, scanner.speckle_sigma)
        self.noise = _complex_speckle(rng, bank, (0.6, 0.6))
        self.texture = {sigma: _smooth_noise(rng, bank, sigma) for sigma in (1.5, 4.0, 9.0)}

    def _crop(self, field: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        y = int(rng.integers(0, field.shape[0] - shape[0]))
        x = int(rng.integers(0, field.shape[1] - shape[1]))
        return field[y:y + shape[0], x:x + shape[1]]

    def render(self, case: DemoCase, rng: np.random.Generator) -> DemoVideo:
        scanner, geometry, frames, mm = self.scanner, self.geometry, self.frames, self.px_per_mm
        depth, lines = geometry.depth_px, geometry.lines
        tissue, tumour = self._tissue(case, rng)

        # Probe motion: a slow lateral sweep with a little wobble, plus axial breathing.
        t = np.arange(frames)
        direction = 1 if rng.random() < 0.5 else -1
        travel = self.sweep * (t / (frames - 1) if direction > 0 else 1 - t / (frames - 1))
        wobble = 2.0 * np.sin(2 * np.pi * t / rng.uniform(10, 18) + rng.uniform(0, 2 * np.pi))
        lateral = np.clip(np.round(4 + travel + wobble), 0, self.pano[1] - lines).astype(int)
        axial = np.round(self.jitter * np.sin(2 * np.pi * t / rng.uniform(12, 24) + rng.uniform(0, 6))).astype(int)
        axial = self.jitter + np.clip(axial, -self.jitter, self.jitter)

        reflect = np.stack([tissue[a:a + depth, l:l + lines] for a, l in zip(axial, lateral)])
        tx, tz, ta, tb = tumour
        keyframe = int(np.argmin(np.abs(tx - lateral - lines / 2)))

        node_frames = node_box = None
        if case.node_kind != "none":
            node_frames, node_box = self._add_node(reflect, case.node_kind, tumour, lateral, axial, rng)
        if rng.random() < 0.35:  # a simple cyst crossing the plane: anechoic, not diagnostic (a distractor)
            self._add_cyst(reflect, tumour, lateral, axial, rng)

        # Echo amplitude = reflectivity x speckle (tissue-bound + decorrelating) x attenuation + noise.
        static = self._crop(self.speckle, self.pano, rng)
        bound = np.stack([static[a:a + depth, l:l + lines] for a, l in zip(axial, lateral)])
        fresh = np.stack([self._crop(self.speckle, (depth, lines), rng) for _ in range(frames)])
        noise = np.stack([self._crop(self.noise, (depth, lines), rng) for _ in range(frames)])
        z_mm = np.arange(depth, dtype=np.float32)[:, None] / mm
        reflect *= 10 ** ((scanner.gain_db - 0.12 * z_mm) / 20)  # net of attenuation and time-gain compensation
        echo = bound * np.complex64(0.93)
        fresh *= np.complex64(0.37)
        echo += fresh
        echo *= reflect
        noise *= np.complex64(10 ** (scanner.noise_db / 20))
        echo += noise
        grey = np.abs(echo)
        grey += 1e-6
        np.log10(grey, out=grey)
        top = 8.0  # dB above mean glandular echo that maps to white
        grey *= 20 * 255.0 / scanner.dynamic_range_db
        grey += 255.0 * (scanner.dynamic_range_db - top) / scanner.dynamic_range_db
        beam = _smooth3(_smooth3(grey, axis=1), axis=2)  # the scanner's speckle reduction

        background = _annotations(case, geometry, self.rows, self.cols, mm)
        video = geometry.place(beam, background)
        angles = np.linspace(0, 2 * np.pi, 48)
        tumour_box = geometry.image_box(tz - axial[keyframe] + tb * np.sin(angles),
                                        tx - lateral[keyframe] + ta * np.cos(angles))
        return DemoVideo(case, video, geometry.box, keyframe, tumour_box, node_frames, node_box)

    def _tissue(self, case: DemoCase, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, ...]]:
        """Static reflectivity panorama (amplitude, glandular tissue = 1): layers, ligaments, tumour, shadow."""
        mm = self.px_per_mm
        shape = self.pano
        z = (np.arange(shape[0], dtype=np.float32)[:, None] - self.jitter) / mm
        x = np.arange(shape[1], dtype=np.float32)[None, :] / mm
        fine, medium, coarse = (self._crop(self.texture[s], shape, rng) for s in (1.5, 4.0, 9.0))

        def boundary(mean_mm: float, wave_mm: float) -> np.ndarray:
            phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(15, 35)
            return mean_mm + wave_mm * np.sin(2 * np.pi * x / period + phase) + 0.3 * wave_mm * np.sin(
                2 * np.pi * x / (period / 2.7) + 2 * phase)

        skin = boundary(rng.uniform(1.3, 2.0), 0.15)
        fat = skin + boundary(rng.uniform(4.0, 9.0), 1.2)
        gland = fat + boundary(rng.uniform(10.0, 16.0), 1.2)
        fascia = gland + boundary(rng.uniform(1.5, 4.0), 0.5)

        def above(edge: np.ndarray) -> np.ndarray:  # soft step: 1 above the edge, 0 below
            return 1.0 / (1.0 + np.exp(np.clip((z - edge) * 5.0, -30, 30)))

        def line(at: np.ndarray, width_mm: float) -> np.ndarray:
            return np.exp(-((z - at) / width_mm) ** 2)

        septa = np.exp(-(coarse / 0.07) ** 2)  # zero crossings of a smooth field: lobule walls, Cooper ligaments
        fat_tissue = 0.16 * (1 + 0.25 * medium) + 0.55 * septa
        glandular = np.clip(1.0 + 0.35 * medium + 0.2 * fine, 0.3, None) * np.where(coarse > 0.9, 0.3, 1.0)
        muscle = 0.2 * (1 + 2.0 * np.cos(np.pi * (z - 0.12 * x + 0.8 * coarse) / 1.8) ** 10) * (1 + 0.2 * medium)
        reflect = (2.0 * above(skin) + (above(fat) - above(skin)) * fat_tissue
                   + (above(gland) - above(fat)) * glandular
                   + (above(fascia) - above(gland)) * 0.15 * (1 + 0.3 * medium)
                   + (1 - above(fascia)) * muscle + 1.6 * line(fascia, 0.35) + 2.5 * line(np.float32(0.15), 0.2))

        # Tumour: hypoechoic, irregular margin, often an echogenic halo, posterior acoustic shadow.
        a = 0.5 * case.tumour_size_mm * mm * rng.uniform(0.9, 1.0)
        b = a * rng.uniform(0.55, 1.0)
        tx = shape[1] / 2 + rng.uniform(-0.1, 0.1) * self.geometry.lines
        tz = float(np.clip(fat.mean() * mm + 0.6 * b + rng.uniform(0, 4 * mm), b + 3 * mm,
                           shape[0] - b - 4 * mm)) if shape[0] > 2 * b + 7 * mm else shape[0] / 2
        rho, angle = _ellipse(shape, tx, tz, a, b, rng.uniform(-0.2, 0.2))
        margin = 1 + sum(rng.uniform(0.02, 0.09) / math.sqrt(k) * np.cos(k * angle + rng.uniform(0, 6))
                         for k in range(3, 11))
        r = rho / margin
        inside = np.clip((1 - r) * min(a, b) + 0.5, 0, 1)
        core = 0.035 * np.clip(1 + 0.5 * medium + 0.4 * fine, 0.2, None)
        halo = rng.uniform(0.0, 1.2) * np.exp(-((r - 1.08) / 0.06) ** 2)
        reflect = reflect * (1 - inside) + core * inside + halo
        columns = np.clip(1 - np.abs(x * mm - tx) / (0.85 * a), 0, 1) ** 0.5
        below = np.clip((z * mm - tz - 0.5 * b) / (1.5 * mm), 0, 1)
        reflect *= 1 - rng.uniform(0.45, 0.85) * columns * below * (1 - inside)
        reach = float(margin.max())  # the irregular margin's furthest point, for boxes and clearances
        return reflect.astype(np.float32), (float(tx), float(tz), reach * a, reach * b)

    def _add_node(self, reflect: np.ndarray, kind: str, tumour: tuple[float, ...], lateral: np.ndarray,
                  axial: np.ndarray, rng: np.random.Generator) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """Draw a lymph node crossing the scan plane during 30-40% of the sweep (in place)."""
        frames, depth, lines = reflect.shape
        mm = self.px_per_mm
        count = max(2, round(rng.uniform(*NODE_WINDOW) * frames))
        first = int(rng.integers(0, frames - count + 1))
        last = first + count - 1
        if kind == "metastatic":  # enlarged, round (long/short axis < 1.4), cortex replaces the fatty hilum
            b = rng.uniform(5.5, 7.5) * mm
            a = b * rng.uniform(1.0, 1.35)
        else:  # normal: small, oval, thin cortex around an echogenic hilum
            a = rng.uniform(4.0, 6.5) * mm
            b = a / rng.uniform(1.9, 2.8)
        tilt = rng.uniform(-0.35, 0.35)
        centre_frame = (first + last) // 2
        nx, nz = self._free_spot(tumour, a, b, lateral[centre_frame], axial[centre_frame], rng)
        remnant = kind == "metastatic" and rng.random() < 0.25  # some nodes keep a compressed hilum sliver
        hilum_shift = rng.uniform(-0.3, 0.3)
        half = (last - first) / 2 + 0.6
        angles = np.linspace(0, 2 * np.pi, 48)
        boxes = []
        for f in range(first, last + 1):
            scale = math.sqrt(1 - ((f - (first + last) / 2) / half) ** 2)  # cross-section of an ellipsoid
            cx, cz = nx - lateral[f], nz - axial[f]
            rho, angle, window = _ellipse_window((depth, lines), cx, cz, a * scale, b * scale, tilt)
            if window is None:
                continue
            patch = reflect[f][window]
            inside = np.clip((1 - rho) * min(a, b) * scale + 0.5, 0, 1)
            if kind == "metastatic":
                value = 0.05 * (1 + 0.25 * rng.standard_normal(rho.shape).astype(np.float32))
                if remnant:
                    value = value + 0.9 * np.exp(-(((rho - 0.55) / 0.12) ** 2 + ((angle - 1.2) / 0.35) ** 2))
                capsule = 2.5 * np.exp(-((rho - 1.05) / 0.12) ** 2)  # echogenic perinodal rim (extranodal spread)
            else:
                u = rho * np.cos(angle) - hilum_shift
                hilum = np.hypot(u, rho * np.sin(angle)) / 0.62
                value = 0.08 + 1.5 * np.clip(1 - hilum, 0, 1) ** 0.4
                capsule = 0.4 * np.exp(-((rho - 1.0) / 0.07) ** 2)
            patch[...] = patch * (1 - inside) + value * inside + capsule
            boxes.append(self.geometry.image_box(cz + b * scale * np.sin(angles), cx + a * scale * np.cos(angles)))
        box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        return (first, last), box

    def _add_cyst(self, reflect: np.ndarray, tumour: tuple[float, ...], lateral: np.ndarray, axial: np.ndarray,
                  rng: np.random.Generator) -> None:
        """A small anechoic cyst with posterior enhancement crossing the plane for a few frames (in place)."""
        frames, depth, lines = reflect.shape
        radius = rng.uniform(1.5, 3.5) * self.px_per_mm
        count = max(2, round(rng.uniform(0.15, 0.3) * frames))
        first = int(rng.integers(0, frames - count + 1))
        middle = first + (count - 1) // 2
        cx, cz = self._free_spot(tumour, radius, radius, lateral[middle], axial[middle], rng)
        half = (count - 1) / 2 + 0.6
        for f in range(first, first + count):
            r = radius * math.sqrt(1 - ((f - first - (count - 1) / 2) / half) ** 2)
            rho, _, window = _ellipse_window((depth, lines), cx - lateral[f], cz - axial[f], r, r, 0.0)
            if window is None:
                continue
            inside = np.clip((1 - rho) * r + 0.5, 0, 1)
            reflect[f][window] = reflect[f][window] * (1 - inside) + 0.01 * inside
            x0, x1 = int(max(0, cx - lateral[f] - r)), int(min(lines, cx - lateral[f] + r))
            z0 = int(min(depth, max(0, cz - axial[f] + 0.6 * r)))
            if x1 > x0 and z0 < depth:
                fade = np.exp(-np.arange(depth - z0, dtype=np.float32) / (6 * self.px_per_mm))[:, None]
                reflect[f, z0:, x0:x1] *= 1 + 0.8 * fade

    def _free_spot(self, tumour: tuple[float, ...], a: float, b: float, lateral: int, axial: int,
                   rng: np.random.Generator) -> tuple[float, float]:
        """A panorama position visible at the given probe offset, clear of the tumour and its shadow."""
        tx, tz, ta, tb = tumour
        mm, depth, lines = self.px_per_mm, self.geometry.depth_px, self.geometry.lines
        x = lateral + rng.uniform(a + 0.05 * lines, lines - a - 0.05 * lines, size=256)
        z = axial + rng.uniform(b + 2 * mm, max(b + 2 * mm + 1, 0.75 * depth - b), size=256)
        clearance = np.hypot((x - tx) / (ta + a + 2 * mm), (z - tz) / (tb + b + 2 * mm))
        clearance[(np.abs(x - tx) < ta + a) & (z > tz)] = 0.0  # in the tumour's acoustic shadow
        best = int(np.argmax(clearance >= 1)) if (clearance >= 1).any() else int(np.argmax(clearance))
        return float(x[best]), float(z[best])


def _ellipse(shape: tuple[int, int], cx: float, cz: float, a: float, b: float,
             tilt: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius and polar angle of every pixel about an ellipse (semi-axes a lateral, b axial)."""
    z, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return _polar(x - cx, z - cz, a, b, tilt)


def _ellipse_window(shape: tuple[int, int], cx: float, cz: float, a: float, b: float, tilt: float):
    """Like `_ellipse`, on the smallest window (a pair of slices) that holds the ellipse; None if outside."""
    reach = max(a, b) + 2
    z0, z1 = max(0, int(cz - reach)), min(shape[0], int(cz + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(shape[1], int(cx + reach) + 1)
    if z1 <= z0 or x1 <= x0:
        return None, None, None
    z, x = np.mgrid[z0:z1, x0:x1].astype(np.float32)
    rho, angle = _polar(x - cx, z - cz, a, b, tilt)
    return rho, angle, (slice(z0, z1), slice(x0, x1))


def _polar(dx: np.ndarray, dz: np.ndarray, a: float, b: float, tilt: float) -> tuple[np.ndarray, np.ndarray]:
    u = (dx * math.cos(tilt) + dz * math.sin(tilt)) / a
    v = (-dx * math.sin(tilt) + dz * math.cos(tilt)) / b
    return np.hypot(u, v), np.arctan2(v, u)


def _to_uint8(grey: np.ndarray) -> np.ndarray:
    return np.clip(grey + 0.5, 0, 255).astype(np.uint8)


def _smooth3(image: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1] / 4 smoothing along one axis (edges kept), cheaper than a general Gaussian filter."""
    out = image * np.float32(0.5)
    inner = [slice(None)] * image.ndim
    before, after = list(inner), list(inner)
    inner[axis], before[axis], after[axis] = slice(1, -1), slice(None, -2), slice(2, None)
    out[tuple(inner)] += np.float32(0.25) * (image[tuple(before)] + image[tuple(after)])
    edges = [slice(None)] * image.ndim
    for edge in (0, -1):
        edges[axis] = edge
        out[tuple(edges)] = image[tuple(edges)]
    return out


def _complex_speckle(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Circular complex Gaussian field low-passed by a Gaussian point-spread: |field| is Rayleigh speckle."""
    white = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    psf = np.exp(-2 * np.pi ** 2 * ((fy * sigma[0]) ** 2 + (fx * sigma[1]) ** 2))
    field = np.fft.ifft2(np.fft.fft2(white) * psf)
    return (field / np.sqrt(np.mean(np.abs(field) ** 2))).astype(np.complex64)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length `sigma` pixels."""
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    lowpass = np.exp(-2 * np.pi ** 2 * sigma ** 2 * (fy ** 2 + fx ** 2))
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * lowpass).real
    return ((field - field.mean()) / field.std()).astype(np.float32)


def _annotations(case: DemoCase, geometry: _Geometry, rows: int, cols: int, px_per_mm: float) -> np.ndarray:
    """The static screen around the image: banner with the (fake) patient, depth ruler, grey bar and logo."""
    from PIL import Image, ImageDraw, ImageFont

    scanner = case.scanner
    x0, y0, x1, y1 = geometry.box
    canvas = Image.new("RGB", (cols, rows))
    draw = ImageDraw.Draw(canvas)
    size = max(7, geometry.banner // 2 - 1)
    font = ImageFont.load_default(size=size)
    small = ImageFont.load_default(size=max(6, size - 2))
    left = f"{case.fake_name}  ID {case.fake_id}  DOB {case.birth_date:%Y-%m-%d}"
    right = f"{case.study_date:%d/%m/%Y}  {scanner.probe}  Breast  MI 0.9 TIs 0.3"
    if scanner.layout == "banner":
        draw.rectangle((0, 0, cols - 1, geometry.banner - 2), fill=(24, 30, 44))
        draw.text((3, 1), left, fill=(235, 235, 235), font=font)
        draw.text((3, geometry.banner // 2), right, fill=(250, 220, 90), font=small)
    else:
        draw.text((3, 1), scanner.institution, fill=(200, 200, 200), font=small)
        draw.text((3, geometry.banner // 3), left, fill=(250, 250, 250), font=font)
        draw.text((3, 2 * geometry.banner // 3), right, fill=(140, 220, 255), font=small)
        draw.line((0, geometry.banner - 1, cols - 1, geometry.banner - 1), fill=(90, 90, 90))

    # Depth ruler right of the image: a tick every 5 mm, labelled in cm.
    rx = min(cols - 6, x1 + 3)
    draw.line((rx, y0, rx, y0 + geometry.depth_px), fill=(200, 200, 200))
    for step in range(int(scanner.depth_mm // 5) + 1):
        y = y0 + step * 5 * px_per_mm
        major = step % 2 == 0
        draw.line((rx, y, rx + (5 if major else 3), y), fill=(200, 200, 200))
        if major and step and rx + 7 < cols - 4:
            draw.text((rx + 7, y - size // 2), str(step // 2), fill=(200, 200, 200), font=small)
    focus = y0 + 0.45 * geometry.depth_px
    draw.polygon([(rx - 1, focus), (rx - 3, focus - 3), (rx - 3, focus + 3)], fill=(255, 200, 0))

    # Grey bar and logo left of the image.
    bar_x = max(2, x0 // 5)
    bar_w = max(3, x0 // 6)
    top, bottom = y0 + geometry.depth_px // 4, y0 + 3 * geometry.depth_px // 4
    for y in range(top, bottom):
        level = round(255 * (bottom - y) / (bottom - top))
        draw.line((bar_x, y, bar_x + bar_w, y), fill=(level, level, level))
    logo = (0, 170, 200) if scanner.layout == "banner" else (230, 120, 30)
    lx, ly = bar_x, y0 + 2
    draw.ellipse((lx, ly, lx + 2 * bar_w, ly + 2 * bar_w), fill=logo)
    draw.text((lx, ly + 2 * bar_w + 2), scanner.model[-1], fill=logo, font=font)
    return np.asarray(canvas).copy()


# ---------------------------------------------------------------------------------------------- writing


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG with 4:2:2 chroma subsampling, as ultrasound scanners store cine loops."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality, subsampling=1)
    return buffer.getvalue()


def _write_still(path: Path, jpeg: bytes) -> None:
    """The keyframe as the scanner exports it: the decoded video frame, saved losslessly."""
    from PIL import Image

    with atomic_path(path) as tmp, Image.open(io.BytesIO(jpeg)) as image:
        image.convert("RGB").save(tmp, format="PNG")


def _write_dicom(path: Path, frames: list[bytes], video: DemoVideo, seed: int) -> None:
    """Ultrasound Multi-frame Image Storage, JPEG Baseline, YBR_FULL_422, with fake identities."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import (
        JPEGBaseline8Bit,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    case, scanner = video.case, video.case.scanner
    rows, cols = video.frames.shape[1:3]

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=["alnvid demo", str(seed), case.patient_id, kind])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.Modality = "US"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "0001"]
    ds.PatientName = case.fake_name
    ds.PatientID = case.fake_id
    ds.PatientBirthDate = f"{case.birth_date:%Y%m%d}"
    ds.PatientSex = "F"
    ds.PatientAge = f"{case.age:03d}Y"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"{case.study_date:%Y%m%d}"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{9 + case.number % 8:02d}{(7 * case.number) % 60:02d}00"
    ds.AccessionNumber = case.accession
    ds.StudyID = "1"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.ReferringPhysicianName = "DEMO^REFERRER"
    ds.OperatorsName = "DEMO^SONOGRAPHER"
    ds.InstitutionName = scanner.institution
    ds.Manufacturer = "alnvid"
    ds.ManufacturerModelName = scanner.model
    ds.StudyDescription = "US BREAST"
    ds.BodyPartExamined = "BREAST"
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(frames)
    ds.FrameTime = f"{1000 / scanner.fps:.1f}"
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.CineRate = ds.RecommendedDisplayFrameRate = round(scanner.fps)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = f"{rows * cols * 3 * len(frames) / sum(map(len, frames)):.1f}"
    if scanner.writes_regions:
        x0, y0, x1, y1 = video.region_box
        region = Dataset()
        region.RegionSpatialFormat = 1  # 2D tissue image
        region.RegionDataType = 1
        region.RegionFlags = 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1 - 1, y1 - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
        region.PhysicalDeltaX = region.PhysicalDeltaY = scanner.depth_mm / 10 / (y1 - y0)
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _manifest_row(case: DemoCase, dicom: str, still: str) -> dict[str, object]:
    row: dict[str, object] = {
        "patient_id": case.patient_id, "path": dicom, "label": case.label, "split": case.split,
        "site": case.scanner.site, "age": case.age, "tumour_size_mm": case.tumour_size_mm, "birads": case.birads,
        "still_path": still,
    }
    for name in READERS:
        call, score = case.readers[name] if case.readers else ("", "")
        row[f"reader_{name}"], row[f"reader_{name}_score"] = call, score
    return row


def _truth_row(video: DemoVideo) -> dict[str, object]:
    def box(value: tuple[int, ...] | None) -> str:
        return "" if value is None else ",".join(map(str, value))

    first, last = video.node_frames or ("", "")
    return {"patient_id": video.case.patient_id, "label": video.case.label, "node_kind": video.case.node_kind,
            "node_first_frame": first, "node_last_frame": last, "node_box": box(video.node_box),
            "keyframe": video.keyframe, "tumour_box": box(video.tumour_box), "region_box": box(video.region_box),
            "scanner": video.case.scanner.model}


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
