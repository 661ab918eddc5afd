"""Read one MRI slice from JPG/PNG, DICOM or figshare MATLAB into a float array in [0, 1].

Every failure becomes an :class:`ImageReadError` whose message is one line naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from brain_tumor.data.limits import MAX_FRAMES as MAX_FRAMES
from brain_tumor.data.limits import MAX_PIXELS as MAX_PIXELS
from brain_tumor.data.limits import ImageReadError as ImageReadError
from brain_tumor.data.limits import check_declared_size as check_declared_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES + (".mat",)

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def to_unit_range(array: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric image to float32 in [0, 1] (a constant image becomes zeros)."""
    array = array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros_like(array)
    return (array - lo) / (hi - lo)


def _read_pil(path: Path) -> np.ndarray:
    try:
        return _decode_pil(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: image too large (over {MAX_PIXELS:,} pixels; decompression bomb?)") from exc


def _decode_pil(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageReadError(f"{path}: image too large ({img.width}x{img.height})")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(img, dtype=np.float32)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(array.max()), 1.0)
                scaled: np.ndarray = np.clip(array / top, 0, 1)
                return scaled
            if img.mode in ("RGBA", "LA", "P", "PA"):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                return np.asarray(Image.alpha_composite(background, rgba).convert("L"), dtype=np.float32) / 255.0
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def check_deflated_dicom(path: Path, limit_bytes: int | None = None) -> None:
    """A Deflated-transfer-syntax DICOM is inflated whole by pydicom before even its header is
    read, so a small file can take gigabytes: inflate it here first, in chunks and discarding
    the output, and refuse it once it passes ``limit_bytes`` (default 4 bytes per allowed pixel)."""
    import zlib

    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    meta = read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    limit = limit_bytes or 4 * MAX_PIXELS
    group_length = int(meta.get("FileMetaInformationGroupLength", 0) or 0)
    with path.open("rb") as fh:
        if fh.read(132)[128:] != b"DICM" or not group_length:
            raise ImageReadError(f"{path}: deflated DICOM without a standard file header")
        fh.seek(132 + 12 + group_length)  # the (0002,0000) element is 12 bytes, then the group
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := fh.read(1 << 16):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 20))
                chunk = inflater.unconsumed_tail
                if total > limit:
                    raise ImageReadError(f"{path}: deflated DICOM inflates to over {limit // (1 << 20)} MB "
                                         "(decompression bomb?)")


def _read_dicom(path: Path, frame: int | None = None) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    check_deflated_dicom(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    check_declared_size(path, int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0), frames)
    if frames > 1 and frame is None:
        raise ImageReadError(f"{path}: multi-frame DICOM ({frames} frames); pick a frame")
    if frame is not None and not 0 <= frame < frames:
        raise ImageReadError(f"{path}: no frame {frame} ({frames} frames)")
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    # one frame decoded at a time: a multi-frame file never sits in memory whole
    pixels = pixel_array(ds, index=frame if frames > 1 else None)
    if pixels.ndim == 3:  # colour DICOM
        pixels = pixels.mean(axis=-1)
    array = apply_modality_lut(pixels, ds).astype(np.float32)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        array = apply_voi_lut(array, ds)
    array = to_unit_range(np.asarray(array))
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        array = 1.0 - array
    return array


def dicom_frame_count(path: str | Path) -> int:
    """Number of frames in a DICOM file (1 for single-frame files)."""
    import pydicom

    check_deflated_dicom(Path(path))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(getattr(ds, "NumberOfFrames", 1) or 1)


def read_slice(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Read one slice as float32 grayscale HxW in [0, 1].

    Raises:
        ImageReadError: unreadable, empty, truncated, unsupported or malformed files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            raise ImageReadError(f"{path}: a folder, not an image file")
        if not path.is_file():
            raise ImageReadError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file")
        if suffix == ".mat":
            from brain_tumor.data.figshare_mat import read_cjdata

            array = to_unit_range(read_cjdata(path).image)
        elif suffix in DICOM_SUFFIXES:
            array = _read_dicom(path, frame)
        elif suffix in IMAGE_SUFFIXES:
            array = _read_pil(path)
        else:
            raise ImageReadError(f"{path}: unsupported file type {suffix or '(none)'}")
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder error becomes one line
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"{path}: cannot read ({message})") from exc
    if array.ndim != 2 or min(array.shape) < 8:
        raise ImageReadError(f"{path}: not a 2-D image (shape {array.shape})")
    if not np.isfinite(array).all():
        raise ImageReadError(f"{path}: image holds non-finite values (NaN or infinity)")
    if float(array.max()) - float(array.min()) < 1e-6:
        raise ImageReadError(f"{path}: constant image (no contrast), nothing to classify")
    return array


def colour_share(path: str | Path, chroma: float = 40.0) -> float:
    """Share of a JPG/PNG/...'s pixels that are clearly coloured (max - min of R, G, B above
    ``chroma`` on the 0-255 scale): about 0 for a grey image, even one stored as RGB or carrying a
    small coloured banner or label; most of a colour photo. 0 for grey modes, DICOM, MATLAB and
    files that do not open (:func:`read_slice` reports those)."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr") or img.width * img.height > MAX_PIXELS:
                    return 0.0
                img.draft("RGB", (256, 256))  # JPEG: decode at a reduced scale, enough for a statistic
                rgba = img.convert("RGBA")  # transparent pixels count as black, as read_slice composites them
                rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
                rgb.thumbnail((256, 256))
                x = np.asarray(rgb, dtype=np.int16)
    except Exception:  # noqa: BLE001 - unreadable files are read_slice's to report
        return 0.0
    return float(((x.max(axis=2) - x.min(axis=2)) > chroma).mean())


def expand_inputs(paths: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Files as given plus supported files inside given folders (sorted); other files found in the
    folders are appended to ``skipped`` so that the caller can report them."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = len(out)
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES:
                    out.append(f)
                elif not f.is_dir() and skipped is not None and not f.name.startswith("."):
                    skipped.append(f)
            if len(out) == found and skipped is not None:
                skipped.append(p)  # a folder given with nothing to read in it
        else:
            out.append(p)
    return out


def read_frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(source name, slice)`` pairs of a file; one per frame for multi-frame DICOM."""
    if path.suffix.lower() in (".dcm", ".dicom") and path.is_file() and path.stat().st_size:
        try:
            frames = dicom_frame_count(path)
        except Exception as exc:  # noqa: BLE001
            raise ImageReadError(f"{path}: not a readable DICOM file ({exc})") from exc
        if frames > 1:
            for f in range(frames):
                yield f"{path}#frame{f}", read_slice(path, frame=f)
            return
    yield str(path), read_slice(path)
