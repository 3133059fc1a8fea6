"""The prompt tools' markups nodes, which the module owns, and the request each placed prompt makes.

A placed point or box asks for the slice it was placed on (`max_propagation` 0: a fraction of a second), so the
radiologist sees the answer at once; Propagate asks for the whole structure from every prompt. Slices are along the
server's slice axis (`scene.acquisition_axis`), so "the clicked slice" is the slice the server segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import slicer

from . import scene as scene_lib

FOREGROUND, BACKGROUND, BOX = "foreground", "background", "box"
ROLES = (FOREGROUND, BACKGROUND, BOX)
ROLE_ATTRIBUTE = "MedFMAdapt.PromptRole"
COLORS = {FOREGROUND: (0.2, 0.85, 0.3), BACKGROUND: (0.95, 0.25, 0.2), BOX: (1.0, 0.85, 0.2)}
CLASSES = {FOREGROUND: "vtkMRMLMarkupsFiducialNode", BACKGROUND: "vtkMRMLMarkupsFiducialNode",
           BOX: "vtkMRMLMarkupsROINode"}
PROPAGATION = 32  # slices a one-slice box is followed each way by Propagate (the server's click default)
BOX_MARGIN = 2  # voxels around the current mask when a click on a slice without a box is sent with the mask's box


@dataclass(frozen=True)
class Placed:
    """One prompt the radiologist placed: which tool, and the control point's id (empty for the box)."""

    role: str
    point_id: str = ""


@dataclass
class PromptNodes:
    """The three markups nodes prompts are placed into; scripts and tests may pass their own nodes instead."""

    foreground: Any = None
    background: Any = None
    box: Any = None

    @classmethod
    def owned(cls, scene) -> PromptNodes:
        """The module's own nodes in `scene`, found by their role attribute or created (coloured, one per role)."""
        found: dict[str, Any] = {}
        for role in ROLES:
            nodes = scene.GetNodesByClass(CLASSES[role])
            for n in range(nodes.GetNumberOfItems()):
                node = nodes.GetItemAsObject(n)
                if node.GetAttribute(ROLE_ATTRIBUTE) == role:
                    found[role] = node
            if role not in found:
                found[role] = _create(scene, role)
        return cls(**found)

    def by_role(self, role: str):
        return {FOREGROUND: self.foreground, BACKGROUND: self.background, BOX: self.box}[role]

    def clear(self) -> None:
        """Remove every placed prompt (a new case starts with none)."""
        for role in ROLES:
            node = self.by_role(role)
            if node is not None:
                node.RemoveAllControlPoints()

    def remove(self, placed: Placed) -> None:
        """Take one placed prompt away (undo); a prompt already deleted by hand is not an error."""
        node = self.by_role(placed.role)
        if node is None:
            return
        if placed.role == BOX:
            node.RemoveAllControlPoints()
            return
        index = node.GetNthControlPointIndexByID(placed.point_id)
        if index >= 0:
            node.RemoveNthControlPoint(index)


def _create(scene, role: str):
    node = scene.AddNewNodeByClass(CLASSES[role], f"MedFMAdapt {role}")
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*COLORS[role])
        display.SetColor(*COLORS[role])
        display.SetPointLabelsVisibility(False)
    return node


def remove_owned(scene) -> None:
    """Remove the module's prompt nodes from the scene (the module is closed)."""
    for role in ROLES:
        nodes = scene.GetNodesByClass(CLASSES[role])
        for node in [nodes.GetItemAsObject(n) for n in range(nodes.GetNumberOfItems())]:
            if node.GetAttribute(ROLE_ATTRIBUTE) == role:
                scene.RemoveNode(node)


def newest(nodes: PromptNodes, role: str) -> Placed:
    """The prompt just placed with a tool: the last defined control point (the box has one)."""
    node = nodes.by_role(role)
    defined = [n for n in range(node.GetNumberOfControlPoints()) if _is_defined(node, n)]
    if not defined:
        raise ValueError(f"No {role} prompt is placed.")
    return Placed(role, "" if role == BOX else node.GetNthControlPointID(defined[-1]))


def _is_defined(node, n: int) -> bool:
    return node.GetNthControlPointPositionStatus(n) == slicer.vtkMRMLMarkupsNode.PositionDefined


def point_indices(volume, node) -> list[list[int]]:
    """Voxel indices of a point list's placed points (one still following the mouse is left out)."""
    if node is None:
        return []
    out = []
    for n in range(node.GetNumberOfControlPoints()):
        if _is_defined(node, n):
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(n, position)
            out.append(scene_lib.ras_to_index(volume, position))
    return out


def _box(volume, node) -> list[int] | None:
    if node is None or node.GetNumberOfControlPoints() == 0 or not _is_defined(node, 0):
        return None
    return scene_lib.roi_to_box(volume, node)


def placed_slice(volume, nodes: PromptNodes, placed: Placed, axis: int) -> int:
    """The slice (along `axis`) a placed prompt sits on: a point's own, the middle of the box."""
    if placed.role == BOX:
        box = _box(volume, nodes.box)
        if box is None:
            raise ValueError("The box is not placed yet.")
        return (box[2 * axis] + box[2 * axis + 1]) // 2
    node = nodes.by_role(placed.role)
    index = node.GetNthControlPointIndexByID(placed.point_id)
    if index < 0:
        raise ValueError("That prompt was deleted.")
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(index, position)
    return scene_lib.ras_to_index(volume, position)[axis]


def slice_request(volume, nodes: PromptNodes, axis: int, index: int, current: np.ndarray | None = None) -> dict:
    """The prompts on one slice as the server's params, asking for that slice only.

    The box is cut down to the slice when it spans it. A slice with clicks but no box gets the box around the
    segment's current mask there (and the clicks), so a background click removes a leak from a propagated mask and
    a foreground click extends it; a slice with neither a box, a mask nor a foreground point cannot be segmented.
    """
    foreground = [p for p in point_indices(volume, nodes.foreground) if p[axis] == index]
    background = [p for p in point_indices(volume, nodes.background) if p[axis] == index]
    roi = _box(volume, nodes.box)
    if roi is not None and roi[2 * axis] <= index <= roi[2 * axis + 1]:
        roi[2 * axis] = roi[2 * axis + 1] = index
    else:
        roi = _mask_box(volume, current, axis, index, foreground)
    if not foreground and roi is None:
        raise ValueError(f"Nothing to segment on slice {index}: a background point removes from a mask, so place a "
                         "foreground point or a box there first.")
    params: dict[str, Any] = {"max_propagation": 0}
    if roi is not None:
        params["roi"] = roi
    if foreground:
        params["foreground"] = foreground
    if background:
        params["background"] = background
    return params


def _mask_box(volume, current: np.ndarray | None, axis: int, index: int, foreground: list) -> list[int] | None:
    """The box around the segment's mask on a slice and the foreground clicks there, grown by BOX_MARGIN."""
    if current is None or not scene_lib.take_slice(current, axis, index).any():
        return None
    voxels = np.argwhere(current)  # [k, j, i] rows
    ijk = voxels[voxels[:, 2 - axis] == index][:, ::-1]
    if foreground:
        ijk = np.vstack([ijk, np.array(foreground)])
    dims = scene_lib.dimensions(volume)
    box: list[int] = []
    for a in range(3):
        if a == axis:
            box += [index, index]
        else:
            box += [max(int(ijk[:, a].min()) - BOX_MARGIN, 0), min(int(ijk[:, a].max()) + BOX_MARGIN, dims[a] - 1)]
    return box


def structure_request(volume, nodes: PromptNodes, axis: int) -> dict:
    """Every prompt as the server's params, followed through the structure (Propagate).

    A box drawn on one slice is stretched PROPAGATION slices each way along the slice axis, so the answer follows
    the structure from slice to slice while staying inside the rectangle the radiologist drew.
    """
    params: dict[str, Any] = {}
    roi = _box(volume, nodes.box)
    if roi is not None:
        if roi[2 * axis] == roi[2 * axis + 1]:
            last = scene_lib.dimensions(volume)[axis] - 1
            roi[2 * axis] = max(roi[2 * axis] - PROPAGATION, 0)
            roi[2 * axis + 1] = min(roi[2 * axis + 1] + PROPAGATION, last)
        params["roi"] = roi
    foreground, background = point_indices(volume, nodes.foreground), point_indices(volume, nodes.background)
    if foreground:
        params["foreground"] = foreground
    if background:
        params["background"] = background
    if "roi" not in params and not foreground:
        raise ValueError("Place a foreground point or a box first.")
    return params


class PromptWatcher:
    """Reports each prompt placed with the tools, as a Placed, and the number of placed prompts when it changes.

    VTK observers on the module's nodes, no Qt, so what a click in a slice view triggers is testable with
    slicer-core. Moving the box's handles reports the box again, once per changed box.
    """

    def __init__(self, nodes: PromptNodes, on_placed: Callable[[Placed], None], on_count: Callable[[int], None]):
        self.nodes, self.on_placed, self.on_count = nodes, on_placed, on_count
        self._observed: list[tuple[Any, int]] = []
        self._last_box: tuple | None = None
        for role in ROLES:
            node = nodes.by_role(role)
            self._observe(node, node.PointPositionDefinedEvent, lambda role=role: self._placed(role))
            for event in (node.PointAddedEvent, node.PointRemovedEvent):
                self._observe(node, event, lambda: self.on_count(self.count()))
        self._observe(nodes.box, nodes.box.PointEndInteractionEvent, lambda: self._placed(BOX))

    def _observe(self, node, event: int, call: Callable[[], None]) -> None:
        self._observed.append((node, node.AddObserver(event, lambda _caller, _event: call())))

    def count(self) -> int:
        return sum(self.nodes.by_role(role).GetNumberOfDefinedControlPoints() for role in ROLES)

    def _placed(self, role: str) -> None:
        try:
            placed = newest(self.nodes, role)
        except ValueError:  # a point removed or unset: nothing to send
            return
        if role == BOX:
            box = self.nodes.box
            shape = (tuple(box.GetObjectToWorldMatrix().GetElement(r, c) for r in range(3) for c in range(4)),
                     tuple(box.GetSize()))
            if shape == self._last_box:  # placing the box ends with an interaction event too
                return
            self._last_box = shape
        self.on_placed(placed)

    def stop(self) -> None:
        for node, tag in self._observed:
            node.RemoveObserver(tag)
        self._observed = []
