"""Parsing of CNN-unit spec strings: MODEL:LAYER:UNIT[@X,Y|@mean]."""
from __future__ import annotations

import re
from dataclasses import dataclass

from evolver_common import BadInput

_UNIT_SPEC = re.compile(
    r"^(?P<model>[^:@\s]+):(?P<layer>[^:@\s]+):(?:unit)?(?P<unit>\d+)(?:@(?P<position>mean|\d+,\d+))?$"
)
UNIT_SPEC_HELP = (
    "A CNN unit is written MODEL:LAYER:UNIT, e.g. resnet50:layer4:unit12 or resnet50:layer4:12; "
    "on a convolutional layer add @X,Y for a spatial position (column, row) or @mean for the channel "
    "mean (the default is the centre position). MODEL is a timm or torchvision model name "
    "(`evolver layers MODEL` lists its layers)."
)


@dataclass(frozen=True)
class UnitSpec:
    """One unit of a CNN: `position` is None (centre), (x, y) in the layer's grid, or 'mean'."""

    model: str
    layer: str
    unit: int
    position: tuple[int, int] | str | None = None

    @classmethod
    def parse(cls, spec: str) -> UnitSpec:
        match = _UNIT_SPEC.match(spec.strip())
        if not match:
            raise BadInput(f"Malformed neuron spec '{spec}'. {UNIT_SPEC_HELP}")
        position = match["position"]
        if position and position != "mean":
            x, y = (int(v) for v in position.split(","))
            position = (x, y)
        return cls(match["model"], match["layer"], int(match["unit"]), position)

    def __str__(self) -> str:
        where = {None: "", "mean": "@mean"}.get(self.position) if not isinstance(self.position, tuple) \
            else "@{},{}".format(*self.position)
        return f"{self.model}:{self.layer}:unit{self.unit}{where}"
