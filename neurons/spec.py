"""Parsing of CNN-unit spec strings: MODEL:LAYER:UNITS[@X,Y|@mean].

UNITS is one unit (`unit12` or `12`) or a set read in the same forward pass: a range
(`unit0-63`) or a bracketed list of units and ranges (`unit[1,5,9-12]`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from evolver_common import BadInput

_UNIT_SPEC = re.compile(
    r"^(?P<model>[^:@\s]+):(?P<layer>[^:@\s]+):(?:unit)?(?P<units>\d+|\d+-\d+|\[[\d,\s-]+\])"
    r"(?:@(?P<position>mean|cls|\d+,\d+))?$"
)
UNIT_SPEC_HELP = (
    "A CNN unit is written MODEL:LAYER:UNIT, e.g. resnet50:layer4:unit12 or resnet50:layer4:12; "
    "on a convolutional layer add @X,Y for a spatial position (column, row) or @mean for the channel "
    "mean (the default is the centre position); on a transformer's tokens @cls reads the class token (the "
    "default where there is one), @X,Y a patch of the patch grid and @mean the mean over patches. Several units of one layer are a range (unit0-63) or a "
    "list (unit[1,5,9-12]). MODEL is a timm or torchvision model name "
    "(`evolver layers MODEL` lists its layers)."
)


# No layer, rig or encoding model has more units, channels or voxels than this: a larger index or set is
# a typo, refused before it could cost seconds and gigabytes.
MAX_INDEX = 10_000_000
MAX_SET = 100_000


def whole_number(text: str, what: str, spec: str, help: str = UNIT_SPEC_HELP) -> int:
    """`text` (digits) as an int no larger than MAX_INDEX."""
    if not text.isdigit() or len(text) > len(str(MAX_INDEX)) or int(text) > MAX_INDEX:
        raise BadInput(f"The {what} '{text[:20]}{'…' if len(text) > 20 else ''}' in spec '{spec[:200]}' is not a "
                       f"whole number up to {MAX_INDEX:,}. {help}")
    return int(text)


def index_set(text: str, spec: str, help: str = UNIT_SPEC_HELP) -> tuple[int, ...]:
    """The numbers of a set written N, A-B or a list of these ('1,5,9-12', brackets optional), at most
    MAX_SET of them."""
    numbers: list[int] = []
    for part in text.strip("[]").split(","):
        bounds = part.split("-")
        if len(bounds) not in (1, 2) or not all(b.isdigit() for b in bounds):  # '1,,2', '1--2'
            raise BadInput(f"Malformed set '{text[:200]}' in spec '{spec[:200]}': each item is a whole number or "
                           f"an increasing range A-B. {help}")
        first, last = (whole_number(b, "index", spec, help) for b in (bounds[0], bounds[-1]))
        if first > last:
            raise BadInput(f"Malformed set '{text[:200]}' in spec '{spec[:200]}': the range {first}-{last} "
                           f"decreases. {help}")
        if len(numbers) + last - first + 1 > MAX_SET:
            raise BadInput(f"The set '{text[:200]}' in spec '{spec[:200]}' holds more than {MAX_SET:,} numbers.")
        numbers += range(first, last + 1)
    if len(set(numbers)) != len(numbers):
        raise BadInput(f"The set '{text}' in spec '{spec}' names a number twice.")
    return tuple(numbers)


@dataclass(frozen=True)
class UnitSpec:
    """One unit of a CNN, or a set of units of one layer (`unit` a tuple: responses (n, k)).

    `position` is None (the centre, or a transformer's class token), (x, y) in the layer's grid, 'mean' or 'cls'.
    """

    model: str
    layer: str
    unit: int | tuple[int, ...]
    position: tuple[int, int] | str | None = None

    @classmethod
    def parse(cls, spec: str) -> UnitSpec:
        match = _UNIT_SPEC.match(spec.strip())
        if not match:
            raise BadInput(f"Malformed neuron spec '{spec}'. {UNIT_SPEC_HELP}")
        position = match["position"]
        if position and position not in ("mean", "cls"):
            x, y = (whole_number(v, "position", spec) for v in position.split(","))
            position = (x, y)
        units = match["units"]
        unit = whole_number(units, "unit", spec) if units.isdigit() else index_set(units, spec)
        return cls(match["model"], match["layer"], unit, position)

    @property
    def units(self) -> tuple[int, ...]:
        return self.unit if isinstance(self.unit, tuple) else (self.unit,)

    def __str__(self) -> str:
        where = {None: "", "mean": "@mean", "cls": "@cls"}.get(self.position) if not isinstance(self.position, tuple) \
            else "@{},{}".format(*self.position)
        return f"{self.model}:{self.layer}:unit{_units_text(self.unit)}{where}"


def _units_text(unit: int | tuple[int, ...]) -> str:
    """12, 0-63 or [1,5,9-12]: runs of consecutive units written as ranges."""
    if isinstance(unit, int):
        return str(unit)
    runs: list[list[int]] = []
    for u in unit:
        if runs and u == runs[-1][-1] + 1:
            runs[-1].append(u)
        else:
            runs.append([u])
    items = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
    return items[0] if len(items) == 1 and len(runs[0]) > 1 else "[" + ",".join(items) + "]"
