"""3D volumes in voxel-index (IJK) order, their geometry, intensity windowing and slice access.

Arrays are indexed [i, j, k] exactly as MONAI Label and 3D Slicer number voxels (ITK index order), so a prompt
`[i, j, k]` from a client addresses `array[i, j, k]` here and results go back on the very same grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .digest import sha256_tree
from .errors import InputError
from .files import atomic_path

CT_DEFAULT_WINDOW = (-1000.0, 1000.0)  # HU; wide enough for lung, soft tissue and bone lesions alike
MR_PERCENTILES = (0.5, 99.5)


@dataclass
class Volume:
    array: np.ndarray  # float32, [i, j, k]
    reference: sitk.Image  # geometry donor for results (spacing, origin, direction)
    key: str  # content hash: the embedding cache's notion of "same image"
    modality: str  # "CT" or "MR"
    slice_axis: int
    window: tuple[float, float] = field(default=(0.0, 1.0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(self.reference.GetSpacing())  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return self.array.shape[self.slice_axis]

    @property
    def in_plane_axes(self) -> tuple[int, int]:
        """The two axes of a slice: the first is its x (columns), the second its y (rows)."""
        a, b = (ax for ax in range(3) if ax != self.slice_axis)
        return a, b

    def slice_raw(self, index: int) -> np.ndarray:
        """Slice `index` as rows x cols (rows = second in-plane axis), raw intensities."""
        view = [slice(None)] * 3
        view[self.slice_axis] = index
        return self.array[tuple(view)].T

    def slice_windowed(self, index: int) -> np.ndarray:
        lo, hi = self.window
        return np.clip((self.slice_raw(index) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)

    def zeros(self, dtype) -> np.ndarray:
        """An [i, j, k] array of this volume's shape, stored slice after slice as the volume is (put_slice writes
        one block)."""
        n, (a, b) = self.n_slices, (self.shape[ax] for ax in self.in_plane_axes)
        return np.moveaxis(np.zeros((n, a, b), dtype=dtype), 0, self.slice_axis)

    def put_slice(self, volume: np.ndarray, index: int, slice2d: np.ndarray) -> None:
        """Write a rows x cols slice back into an [i, j, k] array at `index` along the slice axis."""
        view = [slice(None)] * 3
        view[self.slice_axis] = index
        volume[tuple(view)] = slice2d.T


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder; any failure becomes a plain-words InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file {path.name} does not exist", status=404)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(f"folder {path.name} holds no DICOM series")
            reader.SetFileNames(files)
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"{path.name} is not a readable medical image (NIfTI, NRRD, MHA or DICOM): "
                         f"{str(err).strip().splitlines()[-1][:200]}") from err


def check_3d_scalar(image: sitk.Image, what: str = "image") -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"the {what} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "MedFMAdapt needs a single-channel (scalar) volume")
    if image.GetDimension() != 3:
        raise InputError(f"the {what} is {image.GetDimension()}D with size {list(image.GetSize())}; "
                         "MedFMAdapt needs a 3D volume")
    if min(image.GetSize()) < 1 or sorted(image.GetSize())[1] < 2:
        raise InputError(f"the {what} has size {list(image.GetSize())}, which is not a 3D volume")


def to_ijk(image: sitk.Image) -> np.ndarray:
    """SimpleITK arrays are [k, j, i]; ours are [i, j, k]."""
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def slice_major(array: np.ndarray, axis: int) -> np.ndarray:
    """The same [i, j, k] array, stored slice after slice along `axis`: a click reads tens of slices, and a slice
    of an [i, j, k]-contiguous volume is a gather over all of it (lung2, 512 x 512 x 61: 3.4 ms a slice)."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(array, axis, 0)), 0, axis)


def acquisition_axis(image: sitk.Image) -> int:
    """The axis with the coarsest spacing (the through-plane one); the last axis when spacing is isotropic."""
    spacing = np.asarray(image.GetSpacing())
    coarsest = int(np.argmax(spacing))
    return coarsest if spacing[coarsest] > spacing.min() * 1.05 else 2


def guess_modality(array: np.ndarray) -> str:
    """CT is stored in Hounsfield units, so air sits near -1000; MR intensities are non-negative."""
    return "CT" if float(np.percentile(array, 1)) < -500 else "MR"


def intensity_window(array: np.ndarray, modality: str, ct_window: tuple[float, float]) -> tuple[float, float]:
    if modality == "CT":
        return ct_window
    foreground = array[array > array.min()]
    values = foreground if foreground.size > 100 else array
    lo, hi = np.percentile(values, MR_PERCENTILES)
    return float(lo), float(max(hi, lo + 1e-3))


def load_volume(path: str | os.PathLike, modality: str | None = None,
                ct_window: tuple[float, float] = CT_DEFAULT_WINDOW, slice_axis: int | None = None) -> Volume:
    image = read_image(path)
    check_3d_scalar(image)
    axis = acquisition_axis(image) if slice_axis is None else int(slice_axis)
    array = slice_major(sitk.GetArrayFromImage(image).astype(np.float32, copy=False).transpose(2, 1, 0), axis)
    modality = (modality or guess_modality(array)).upper()
    if modality not in ("CT", "MR"):
        raise InputError(f"modality must be CT or MR, got {modality!r}")
    window = intensity_window(array, modality, ct_window)
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(image)
    return Volume(array=array, reference=reference, key=sha256_tree(path), modality=modality,
                  slice_axis=axis, window=window)


def load_label(path: str | os.PathLike, like: Volume | sitk.Image) -> np.ndarray:
    """A label map in [i, j, k] order that must share its image's grid; otherwise an InputError says how it differs."""
    label = read_image(path)
    check_3d_scalar(label, "label")
    reference = like.reference if isinstance(like, Volume) else like
    check_same_grid(label, reference)
    array = to_ijk(label)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.allclose(rounded, array):
            raise InputError("the label holds non-integer values; a label map must hold integer label values")
        array = rounded
    return array.astype(np.int16)


def check_same_grid(label: sitk.Image, image: sitk.Image, tolerance: float = 1e-3) -> None:
    if tuple(label.GetSize()) != tuple(image.GetSize()):
        raise InputError(f"the label's size {list(label.GetSize())} does not match the image's "
                         f"{list(image.GetSize())}", status=422)
    for name, a, b in (("spacing", label.GetSpacing(), image.GetSpacing()),
                       ("origin", label.GetOrigin(), image.GetOrigin()),
                       ("direction", label.GetDirection(), image.GetDirection())):
        scale = max(1.0, float(np.max(np.abs(b))))
        if not np.allclose(a, b, atol=tolerance * scale):
            raise InputError(f"the label's {name} {np.round(a, 4).tolist()} does not match the image's "
                             f"{np.round(b, 4).tolist()}", status=422)


def write_label(label_ijk: np.ndarray, reference: Volume | sitk.Image, out_path: str | os.PathLike) -> str:
    """Write an [i, j, k] label map on the reference's grid (spacing, origin, direction copied exactly)."""
    return write_image(label_ijk.astype(np.uint8), reference, out_path)


def write_image(array_ijk: np.ndarray, reference: Volume | sitk.Image, out_path: str | os.PathLike) -> str:
    """Write any [i, j, k] array on the reference's grid, atomically (same folder, then rename)."""
    ref = reference.reference if isinstance(reference, Volume) else reference
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array_ijk, (2, 1, 0))))
    image.CopyInformation(ref)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:  # the temporary name keeps the suffix, which picks the file format
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return str(out_path)
