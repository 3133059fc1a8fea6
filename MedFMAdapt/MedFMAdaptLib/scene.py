"""MRML conversions between the Slicer scene and the server's files and prompts.

Slicer works in RAS; the server's files and prompts are in voxel indices (IJK, i = column, j = row, k = slice)
of the same file Slicer shows. Every conversion goes through the volume's own IJK-to-RAS matrix, so oblique
volumes, LPS-stored files and flipped axes come out right. Files are read and written by Slicer's own
volume storage node (ITK IO), the way Slicer itself loads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

GRID_TOLERANCE = 1e-4  # mm / direction cosine; NIfTI stores float32 geometry

# The converter rules Slicer's Segmentations module registers when the application starts
# (qSlicerSegmentationsModule::setup). Besides converting, the factory's rules are what construct
# representation objects, e.g. the vtkOrientedImageData a segment is copied into.
CONVERTER_RULES = ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule")


# ---- matrices ---------------------------------------------------------------------------------------------------


def _to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras(volume) -> np.ndarray:
    """The volume's 4x4 IJK-to-RAS matrix (its own coordinates, before any parent transform)."""
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return _to_numpy(matrix)


def world_to_ijk(volume) -> np.ndarray:
    """4x4 matrix taking a world RAS point (where markups live) to the volume's continuous IJK."""
    world_to_local = np.eye(4)
    parent = volume.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise ValueError(f"'{volume.GetName()}' is under a non-linear transform; harden it first.")
        matrix = vtk.vtkMatrix4x4()
        slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(None, parent, matrix)
        world_to_local = _to_numpy(matrix)
    return np.linalg.inv(ijk_to_ras(volume)) @ world_to_local


def dimensions(volume) -> tuple[int, int, int]:
    """Voxel counts along i, j, k."""
    image = volume.GetImageData()
    if image is None:
        raise ValueError(f"'{volume.GetName()}' has no voxels loaded.")
    return tuple(int(d) for d in image.GetDimensions())


def voxel_array(volume) -> np.ndarray:
    """Voxels as a numpy array indexed [k, j, i] (a copy, like SimpleITK's GetArrayFromImage)."""
    image = volume.GetImageData()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(dimensions(volume)[::-1]).copy()


# ---- markups to the server's IJK prompts ------------------------------------------------------------------------


def ras_to_index(volume, ras: Sequence[float]) -> list[int]:
    """Nearest voxel index [i, j, k] of a world RAS point; ValueError when it lies outside the volume."""
    ijk = world_to_ijk(volume) @ np.array([ras[0], ras[1], ras[2], 1.0])
    index = [int(np.floor(v + 0.5)) for v in ijk[:3]]
    dims = dimensions(volume)
    if any(not 0 <= index[a] < dims[a] for a in range(3)):
        raise ValueError(f"The point at RAS {tuple(round(float(v), 1) for v in ras)} is outside the volume.")
    return index


def _roi_corners_world(roi_node) -> np.ndarray:
    """The 8 corners of a (possibly rotated) markups ROI box, in world RAS, as rows."""
    object_to_world = _to_numpy(roi_node.GetObjectToWorldMatrix())
    half = np.array(roi_node.GetSize()) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    local = np.hstack([signs * half, np.ones((8, 1))])
    return (object_to_world @ local.T).T[:, :3]


def roi_to_box(volume, roi_node) -> list[int]:
    """The ROI as the server's box [i0, i1, j0, j1, k0, k1] (per-axis pairs, as the stock MONAI Label plugin sends):
    inclusive voxel indices, clipped to the volume.

    The box is the smallest index-aligned box holding all 8 ROI corners, so an ROI drawn in RAS on an oblique
    volume still covers what the user drew.
    """
    to_ijk = world_to_ijk(volume)
    corners = np.hstack([_roi_corners_world(roi_node), np.ones((8, 1))])
    ijk = (to_ijk @ corners.T).T[:, :3]
    low = np.floor(ijk.min(axis=0) + 0.5).astype(int)
    high = np.floor(ijk.max(axis=0) + 0.5).astype(int)
    dims = np.array(dimensions(volume))
    if np.any(high < 0) or np.any(low > dims - 1):
        raise ValueError("The ROI box does not overlap the volume.")
    low = np.clip(low, 0, dims - 1)
    high = np.clip(high, 0, dims - 1)
    return [int(low[0]), int(high[0]), int(low[1]), int(high[1]), int(low[2]), int(high[2])]


# ---- volumes to and from files ----------------------------------------------------------------------------------


def write_volume(volume, path: Path) -> Path:
    """Write a volume node as NIfTI (or any ITK format by suffix) with its real spacing, origin and direction."""
    if volume.GetParentTransformNode() is not None:
        raise ValueError(f"'{volume.GetName()}' is under a transform; harden it before uploading.")
    path = Path(path)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(1)
    if not storage.WriteData(volume):
        raise OSError(f"Could not write '{volume.GetName()}' to {path}.")
    return path


def read_volume(scene, path: Path, name: str, labelmap: bool = False, add: bool = True, native_ijk: bool = True):
    """Read a volume file into a new volume node; not added to the scene if add=False.

    With native_ijk (the default, used for every file from the server) the node keeps the file's own voxel order.
    Slicer's loader otherwise flips one axis of a left-handed file (e.g. slices stored head-to-feet), which keeps
    the anatomy in place but makes Slicer's k index differ from the server's, so prompts would hit the wrong slice.
    """
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetForceRightHandedIJKCoordinateSystem(not native_ijk)
    if labelmap:
        storage.SetSingleFile(1)
    if not storage.ReadData(node):
        raise OSError(f"Could not read a volume from {Path(path).name}.")
    if add:
        scene.AddNode(node)
        node.CreateDefaultDisplayNodes()
    return node


def same_grid(a, b, tolerance: float = GRID_TOLERANCE) -> bool:
    """True when two volume nodes have the same dimensions and IJK-to-RAS geometry."""
    return dimensions(a) == dimensions(b) and np.allclose(ijk_to_ras(a), ijk_to_ras(b), atol=tolerance)


# ---- overlays ----------------------------------------------------------------------------------------------------

OVERLAY_ROLE = "MedFMAdapt.uncertainty"
OVERLAY_COLORS = "MedFMAdapt uncertainty"
ENTROPY_MAX = float(np.log(2.0))  # binary entropy in nats of a 50/50 guess


def overlay_colors(scene):
    """A colour table for uncertainty maps: clear blue (sure) through yellow to red (guessing); made once per scene.

    Built here rather than taken from Slicer's stock tables so the overlay looks the same in slicer-core and Slicer.
    """
    for node in _nodes_by_name(scene, "vtkMRMLColorTableNode", OVERLAY_COLORS):
        return node
    table = slicer.vtkMRMLColorTableNode()
    table.SetName(OVERLAY_COLORS)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    table.GetLookupTable().SetTableRange(0, 255)
    for n in range(256):
        t = n / 255.0
        red, green, blue = (2 * t, 2 * t, 1 - 2 * t) if t <= 0.5 else (1.0, 2 * (1 - t), 0.0)
        table.SetColor(n, f"{n}", red, green, blue, 1.0)
    table.SetHideFromEditors(True)
    scene.AddNode(table)
    return table


def _nodes_by_name(scene, class_name: str, name: str) -> list:
    nodes = scene.GetNodesByClassByName(class_name, name)
    return [nodes.GetItemAsObject(n) for n in range(nodes.GetNumberOfItems())]


def load_overlay(scene, path: Path, volume, name: str | None = None, maximum: float = ENTROPY_MAX):
    """A server map (e.g. the uncertainty of a segmentation) as a scalar volume node on `volume`'s geometry.

    Like a label, the file is checked against the volume's grid before anything is added, so a mismatched answer
    changes nothing. The node gets the uncertainty colour table, a fixed 0..`maximum` window (0 = sure) and a
    threshold that leaves voxels with no uncertainty transparent, so it can be shown as the slice views' foreground.
    The previous overlay of the same volume is replaced.
    """
    overlay = read_volume(scene, path, name or f"{volume.GetName()} uncertainty", add=False)
    if not same_grid(overlay, volume):
        raise ValueError("The server's uncertainty map is not on the volume's voxel grid; nothing was added.")
    overlay.CopyOrientation(volume)  # remove float32 rounding from the file so the grids match exactly
    old = volume.GetNodeReference(OVERLAY_ROLE)
    scene.AddNode(overlay)
    display = slicer.vtkMRMLScalarVolumeDisplayNode()
    scene.AddNode(display)
    display.SetAndObserveColorNodeID(overlay_colors(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, float(maximum))
    display.AutoThresholdOff()
    display.SetThreshold(float(maximum) * 0.02, float(maximum) * 10.0)
    display.ApplyThresholdOn()
    overlay.SetAndObserveDisplayNodeID(display.GetID())
    volume.SetNodeReferenceID(OVERLAY_ROLE, overlay.GetID())
    if old is not None:
        remove_volume(scene, old)
    return overlay


def overlay_of(volume):
    """The uncertainty overlay last loaded for `volume`, or None."""
    return volume.GetNodeReference(OVERLAY_ROLE) if volume is not None else None


def remove_volume(scene, node) -> None:
    """Remove a volume node with its display and storage nodes."""
    for n in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(n)
        if display is not None:
            scene.RemoveNode(display)
    storage = node.GetStorageNode()
    if storage is not None:
        scene.RemoveNode(storage)
    scene.RemoveNode(node)


# ---- labels to and from segmentations ---------------------------------------------------------------------------


def ensure_segmentation_converters() -> None:
    """Register the segmentation converter rules the Segmentations module registers in the Slicer application.

    Without them the converter factory cannot construct a binary labelmap, so copying a segment into another
    segmentation (vtkSegment::DeepCopy, vtkSegmentation::AddSegment) fails and the segment is silently dropped.
    slicer-core (pytest, scripts) does not run the module's setup. Rules already present are not registered
    again, so inside Slicer this changes nothing.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for class_name in CONVERTER_RULES:
        if class_name not in present:
            factory.RegisterConverterRule(getattr(slicer, class_name)())


def label_names(labels) -> dict[int, str]:
    """Label value -> name from the server's /info/ "labels" (a dict name->value, or a list of names)."""
    if isinstance(labels, Mapping):
        return {int(v): str(k) for k, v in labels.items() if str(v).lstrip("-").isdigit() and int(v) != 0}
    if isinstance(labels, Sequence) and not isinstance(labels, str):
        return {i + 1: str(name) for i, name in enumerate(labels)}
    return {}


def label_file_to_segmentation(
    scene,
    label_path: Path,
    volume,
    name: str,
    names: Mapping[int, str] | None = None,
    color: Sequence[float] | None = None,
):
    """A server label file as a new segmentation node on `volume`'s geometry.

    The file is checked against the volume's grid before anything is added, so a mismatched answer
    changes nothing in the scene.
    """
    ensure_segmentation_converters()
    label = read_volume(scene, label_path, f"{name}_label", labelmap=True, add=False)
    if not same_grid(label, volume):
        raise ValueError("The server's label is not on the volume's voxel grid; nothing was added to the scene.")
    label.CopyOrientation(volume)  # remove float32 rounding from the file so the grids match exactly
    scene.AddNode(label)
    segmentation = slicer.vtkMRMLSegmentationNode()
    segmentation.SetName(name)
    scene.AddNode(segmentation)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, segmentation):
            raise ValueError("Slicer could not turn the server's label into segments.")
    except Exception:
        scene.RemoveNode(segmentation)
        raise
    finally:
        scene.RemoveNode(label)
    seg = segmentation.GetSegmentation()
    for n in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(n)
        value = segment.GetLabelValue()
        if names and value in names:
            segment.SetName(names[value])
        if color is not None:
            segment.SetColor(*color[:3])
    return segmentation


def segmentation_to_array(segmentation, volume, values: Mapping[str, int] | None = None) -> np.ndarray:
    """Segments painted into one [k, j, i] array on the volume's grid; a segment's value comes from `values`
    by name, else from its position (1, 2, ...)."""
    out = np.zeros(dimensions(volume)[::-1], dtype=np.uint8)
    seg = segmentation.GetSegmentation()
    for n in range(seg.GetNumberOfSegments()):
        mask = segment_array(segmentation, seg.GetNthSegmentID(n), volume)
        value = (values or {}).get(seg.GetNthSegment(n).GetName(), n + 1)
        out[mask] = value
    return out


def segmentation_to_label_file(segmentation, volume, path: Path, values: Mapping[str, int] | None = None) -> Path:
    """Write a segmentation as a label file on the volume's grid, ready for PUT /datastore/label."""
    array = segmentation_to_array(segmentation, volume, values)
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap.CopyOrientation(volume)
    image = vtk.vtkImageData()
    image.SetDimensions(*dimensions(volume))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    flat[:] = array.ravel()
    labelmap.SetAndObserveImageData(image)
    return write_volume(labelmap, path)


def set_visible(segmentation, visible: bool) -> None:
    """Show or hide a segmentation in every view (the base/adapted review toggle)."""
    display = segmentation.GetDisplayNode()
    if display is not None:
        display.SetVisibility(bool(visible))


def merge_segments(target, source) -> list[str]:
    """Copy every segment of `source` into `target`, replacing target segments of the same name in place.

    Used after a result was fully imported and checked, so a failed call never touches the user's segmentation:
    a segment is copied first and the one it replaces is removed only once the copy is in. Returns the names merged.
    """
    ensure_segmentation_converters()
    src = source.GetSegmentation()
    dst = target.GetSegmentation()
    names = []
    for n in range(src.GetNumberOfSegments()):
        segment_id = src.GetNthSegmentID(n)
        name = src.GetSegment(segment_id).GetName()
        old = dst.GetSegmentIdBySegmentName(name)
        before = set(dst.GetSegmentIDs())
        # The copy keeps `segment_id` unless the target already has it, then it gets a fresh unique id.
        if not dst.CopySegmentFromSegmentation(src, segment_id):
            raise ValueError(f"Slicer could not add the segment '{name}' to '{target.GetName()}'.")
        (new,) = set(dst.GetSegmentIDs()) - before
        if old:
            dst.SetSegmentIndex(new, dst.GetSegmentIndex(old))  # take the replaced segment's place in the list
            dst.RemoveSegment(old)
        names.append(name)
    return names


def working_segmentation(scene, volume, name: str | None = None):
    """The segmentation node the user edits for `volume` (created on first use, referenced from the volume)."""
    ensure_segmentation_converters()
    role = "MedFMAdapt.segmentation"
    node = volume.GetNodeReference(role)
    if node is None:
        node = slicer.vtkMRMLSegmentationNode()
        node.SetName(name or f"{volume.GetName()} segmentation")
        scene.AddNode(node)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        volume.SetNodeReferenceID(role, node.GetID())
    return node


def sanitize_id(name: str) -> str:
    """A volume name as a server image id: letters, digits, '-', '_' only."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or "volume"


# ---- one segment as voxels, replaced slice by slice -------------------------------------------------------------

MODEL_SLICES_TAG = "MedFMAdapt.modelSlices"  # which slices of a segment hold the model's answer, as written


def acquisition_axis(volume) -> int:
    """The server's slice axis for a volume (0 = i, 1 = j, 2 = k): the coarsest spacing, else k.

    The same rule as the server's `acquisition_axis`, so a click's slice is the slice the server segments; the
    server's reply names the axis it used (`slice_axis`) and the merge follows the reply.
    """
    spacing = np.asarray(volume.GetSpacing(), dtype=float)
    coarsest = int(np.argmax(spacing))
    return coarsest if spacing[coarsest] > spacing.min() * 1.05 else 2


def take_slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice `index` along IJK axis `axis` of a [k, j, i] array (a view)."""
    return np.take(array, index, axis=2 - axis)


def _slice_view(array: np.ndarray, axis: int, index: int) -> tuple:
    view: list = [slice(None)] * 3
    view[2 - axis] = index
    return tuple(view)


def segment_array(segmentation, segment_id: str, volume) -> np.ndarray:
    """One segment as a boolean [k, j, i] array on the volume's grid."""
    ensure_segmentation_converters()
    scene = segmentation.GetScene()
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(labelmap)
    try:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume):
            name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
            raise ValueError(f"Could not export segment '{name}'.")
        return voxel_array(labelmap) > 0
    finally:
        remove_volume(scene, labelmap)


def set_segment_array(segmentation, segment_id: str, volume, mask: np.ndarray) -> None:
    """Replace one segment's voxels by a boolean [k, j, i] array on the volume's grid (others untouched)."""
    ensure_segmentation_converters()
    scene = segmentation.GetScene()
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap.CopyOrientation(volume)
    image = vtk.vtkImageData()
    image.SetDimensions(*dimensions(volume))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    labelmap.SetAndObserveImageData(image)
    scene.AddNode(labelmap)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
            raise ValueError(f"Slicer could not write the segment '{segment_id}'.")
    finally:
        remove_volume(scene, labelmap)


def target_segment(segmentation, segment_id: str | None, name: str, color: Sequence[float]) -> str:
    """The segment a prompt's answer goes to: the one selected in the Segment Editor if it exists, else the first,
    else a new empty one named `name`."""
    seg = segmentation.GetSegmentation()
    if segment_id and seg.GetSegment(segment_id) is not None:
        return segment_id
    if seg.GetNumberOfSegments() > 0:
        return seg.GetNthSegmentID(0)
    return seg.AddEmptySegment("", name, list(color[:3]))


def _digest(mask2d: np.ndarray) -> str:
    return hashlib.sha1(np.packbits(mask2d.astype(bool)).tobytes() + str(mask2d.shape).encode()).hexdigest()[:16]


def model_slices(segment, axis: int) -> dict[int, str]:
    """Slice -> digest of what the model last wrote there (along `axis`); empty for another axis or none."""
    value = vtk.reference("")
    if not segment.GetTag(MODEL_SLICES_TAG, value):
        return {}
    try:
        record = json.loads(str(value))
        return {int(k): str(v) for k, v in record["slices"].items()} if record.get("axis") == axis else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _set_model_slices(segment, axis: int, written: Mapping[int, str]) -> None:
    segment.SetTag(MODEL_SLICES_TAG, json.dumps({"axis": axis, "slices": {str(k): v for k, v in written.items()}}))


@dataclass
class SliceChange:
    """What a merge changed in one segment, enough to undo it: the slices as they were, and the record of which
    slices held the model's answer before."""

    segment_id: str
    axis: int
    before: dict[int, np.ndarray] = field(default_factory=dict)
    written_before: dict[int, str] = field(default_factory=dict)
    kept: list[int] = field(default_factory=list)  # slices the model answered but the radiologist had edited

    @property
    def replaced(self) -> list[int]:
        return sorted(self.before)


def replace_slices(
    segmentation, segment_id: str, volume, answer: np.ndarray, axis: int, slices: Sequence[int],
    forced: Sequence[int] = (), clear_stale: bool = False,
) -> SliceChange:
    """Put the model's answer (boolean [k, j, i]) into one segment, slice by slice along `axis`.

    A slice in `slices` (the slices the server answered) or `forced` (the slice the radiologist just clicked, which
    is cleared if the answer left it out) is replaced when it is forced, or still exactly what the model last wrote
    there (empty counts when the model wrote nothing); a slice the radiologist edited by hand is kept and reported.
    With `clear_stale` (a whole-structure answer) slices the model wrote earlier and this answer no longer covers
    are cleared the same way, so the answer replaces the previous prediction rather than adding to it.
    """
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    current = segment_array(segmentation, segment_id, volume)
    written = model_slices(segment, axis)
    change = SliceChange(segment_id, axis, written_before=dict(written))
    wanted = {int(s) for s in slices} | {int(s) for s in forced} | (set(written) if clear_stale else set())
    for index in sorted(wanted):
        if not 0 <= index < current.shape[2 - axis]:
            continue
        now = take_slice(current, axis, index)
        new = take_slice(answer, axis, index) if index in slices else np.zeros_like(now)
        expected = written.get(index) or _digest(np.zeros_like(now))  # an erased slice is an edit too
        edited = expected != _digest(now)
        if edited and index not in forced:
            change.kept.append(index)
            continue
        if not np.array_equal(now, new):
            change.before[index] = now.copy()
            current[_slice_view(current, axis, index)] = new
        if new.any():
            written[index] = _digest(new)
        else:
            written.pop(index, None)
    if change.before:
        set_segment_array(segmentation, segment_id, volume, current)
    _set_model_slices(segment, axis, written)
    return change


def undo_slices(segmentation, volume, change: SliceChange) -> None:
    """Put back the slices a merge replaced, and the record of which slices held the model's answer."""
    segment = segmentation.GetSegmentation().GetSegment(change.segment_id)
    if segment is None:
        raise ValueError("The segment that prompt changed no longer exists; nothing to undo.")
    if change.before:
        current = segment_array(segmentation, change.segment_id, volume)
        for index, before in change.before.items():
            current[_slice_view(current, change.axis, index)] = before
        set_segment_array(segmentation, change.segment_id, volume, current)
    _set_model_slices(segment, change.axis, change.written_before)
