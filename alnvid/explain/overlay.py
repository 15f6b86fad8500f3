"""Pictures of a Grad-CAM: heat blended on the cropped ultrasound image, keyframe figure, contact sheet, GIF, MP4.

Overlays are drawn on the imaging region only (the crop), never on the full screen capture, so burned-in
patient banners outside the region cannot reach an output image. Every file is written atomically.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alnvid.utils import atomic_path

__all__ = ["blend", "colorize", "contact_sheet", "keyframe_figure", "save_gif", "save_mp4", "save_png"]

HIGHLIGHT = (255, 40, 40)


def colorize(heat: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """(h, w) values in [0, 1] -> (h, w, 3) uint8 RGB through a matplotlib colormap."""
    import matplotlib

    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return lut[np.clip(np.rint(heat * 255), 0, 255).astype(np.intp)]


def blend(frame: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5, cmap: str = "turbo",
          fade_below: float = 0.2) -> np.ndarray:
    """Heat over a (h, w, 3) uint8 frame; opacity ``alpha`` where heat >= ``fade_below``, fading to 0 at heat 0
    so that tissue without evidence stays readable."""
    if frame.shape[:2] != heat.shape:
        raise ValueError(f"frame {frame.shape[:2]} and heat {heat.shape} differ in size")
    opacity = alpha * np.clip(heat / fade_below, 0.0, 1.0)[..., None] if fade_below > 0 else alpha
    mixed = frame.astype(np.float32) * (1 - opacity) + colorize(heat, cmap).astype(np.float32) * opacity
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def keyframe_figure(overlay: np.ndarray, caption: str, *, cmap: str = "turbo",
                    box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """The overlay with a colour bar (0-1, right) and a caption strip (below); ``box`` (x0, y0, x1, y1 in overlay
    pixels) is outlined."""
    h, w = overlay.shape[:2]
    font_px = max(10, min(18, h // 20))
    font = _font(font_px)
    bar_w, margin = max(12, w // 30), 6
    label_w = int(font.getlength("1.0")) + margin
    caption_h = (font_px + 4) * (caption.count("\n") + 1) + 2 * margin
    caption_w = max(int(font.getlength(line)) for line in caption.splitlines()) + 2 * margin
    canvas = Image.new("RGB", (max(w + bar_w + label_w + 2 * margin, caption_w), h + caption_h), (0, 0, 0))
    image = Image.fromarray(overlay)
    draw_image = ImageDraw.Draw(image)
    if box is not None:
        draw_image.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=(255, 255, 255), width=max(1, w // 200))
    canvas.paste(image, (0, 0))
    bar = colorize(np.linspace(1, 0, h)[:, None].repeat(bar_w, 1), cmap)
    canvas.paste(Image.fromarray(bar), (w + margin, 0))
    draw = ImageDraw.Draw(canvas)
    for value, y in ((1.0, 0), (0.5, h // 2 - font_px // 2), (0.0, h - font_px - 2)):
        draw.text((w + margin + bar_w + 3, y), f"{value:.1f}", fill=(255, 255, 255), font=font)
    draw.multiline_text((margin, h + margin), caption, fill=(255, 255, 255), font=font, spacing=4)
    return canvas


def contact_sheet(tiles: Sequence[np.ndarray], labels: Sequence[str], *, highlight: Sequence[bool],
                  columns: int | None = None, tile_width: int = 192) -> Image.Image:
    """A grid of overlays, each labelled; highlighted tiles (the keyframe) get a red frame and label."""
    if not tiles:
        raise ValueError("no tiles for the contact sheet")
    columns = columns or int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / columns))
    h0, w0 = tiles[0].shape[:2]
    tile_height = max(1, round(h0 * tile_width / w0))
    font = _font(12)
    label_h, pad = 12 + 6, 4
    cell_w, cell_h = tile_width + 2 * pad, tile_height + label_h + 2 * pad
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, (tile, label, key) in enumerate(zip(tiles, labels, highlight)):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        sheet.paste(Image.fromarray(tile).resize((tile_width, tile_height), Image.BILINEAR), (x + pad, y + pad))
        if key:
            draw.rectangle((x + 1, y + 1, x + cell_w - 2, y + pad + tile_height + pad - 2), outline=HIGHLIGHT, width=3)
        draw.text((x + pad, y + 2 * pad + tile_height), label, fill=HIGHLIGHT if key else (255, 255, 255), font=font)
    return sheet


def save_png(image: Image.Image | np.ndarray, path: str | Path) -> Path:
    """Write a PNG atomically."""
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, *, frame_ms: float = 50.0, max_side: int = 320) -> Path:
    """An animated, looping GIF of (h, w, 3) uint8 frames, scaled so that the long side is at most ``max_side``."""
    images = [Image.fromarray(f) for f in _scaled(frames, max_side)]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=max(20, int(round(frame_ms))), optimize=False)
    return Path(path)


def save_mp4(frames: Sequence[np.ndarray], path: str | Path, *, fps: float = 20.0, max_side: int = 640) -> Path | None:
    """An H.264 MP4 (MPEG-4 part 2 where no H.264 encoder exists) through PyAV; None when no encoder works."""
    import av

    scaled = _scaled(frames, max_side, even=True)
    for codec in ("libx264", "mpeg4"):
        try:
            with atomic_path(path) as tmp:
                with av.open(str(tmp), mode="w", format="mp4") as container:
                    stream = container.add_stream(codec, rate=max(1, round(fps)))
                    stream.width, stream.height = scaled[0].shape[1], scaled[0].shape[0]
                    stream.pix_fmt = "yuv420p"
                    for frame in scaled:
                        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                    container.mux(stream.encode())
            return Path(path)
        except (av.FFmpegError, ValueError, OSError):
            continue
    return None


def _scaled(frames: Sequence[np.ndarray], max_side: int, *, even: bool = False) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    if even:
        size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
    if size == (w, h):
        return [np.ascontiguousarray(f) for f in frames]
    return [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (no system fonts needed)."""
    return ImageFont.load_default(size=size)
