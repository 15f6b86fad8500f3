"""Grad-CAM explanations of video and static models: heatmaps over the sweep, keyframes, overlays.

`explain_file` explains one DICOM/video and writes PNG, GIF, MP4, NPZ and JSON artefacts under neutral names;
`GradCAM` is the hook-based Grad-CAM for any registered backbone; `GradCAMExport` writes explanations of a test
set's most confident predictions and its errors.
"""
from __future__ import annotations

from alnvid.explain.core import Explanation, explain_file, explain_video
from alnvid.explain.export import GradCAMExport, export_gradcam
from alnvid.explain.gradcam import MIN_CAM_CELLS, GradCAM, GradCAMResult, normalise_clip
from alnvid.explain.keyframe import HOT, InputGeometry, Keyframe, heat_box, select_keyframes

__all__ = [
    "Explanation",
    "GradCAM",
    "GradCAMExport",
    "GradCAMResult",
    "HOT",
    "InputGeometry",
    "MIN_CAM_CELLS",
    "Keyframe",
    "explain_file",
    "explain_video",
    "export_gradcam",
    "heat_box",
    "normalise_clip",
    "select_keyframes",
]
