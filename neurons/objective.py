"""Composite objectives written in the `--neuron` option: sums, differences and scalar multiples of
neuron specs, reductions over unit sets and one-hot population targets.

    resnet50:layer4:unit12 - 0.5*resnet50:layer4:unit13
    mean(resnet50:layer4:unit0-63)            max(...), min(...) likewise
    onehot(resnet50:layer4:unit0-63, 12)      unit 12 minus the mean of the other 63 (Bashivan et al. 2019)
    onehot(resnet50:layer4:unit0-63, 12, max) unit 12 minus the largest of the others
    -(v1:simple:ori=90)                       a negative weight: the least preferred stimulus

The grammar (a hand-written recursive descent: five rules, and errors that point at a character):

    expr    := term (('+' | '-') term)*
    term    := unary ('*' unary)*          at most one factor of a product is not a number
    unary   := '-' unary | primary
    primary := NUMBER | SPEC | FUNCTION '(' arguments ')' | '(' expr ')'

A SPEC runs up to a space, parenthesis, '+', '*' or ',' (so '-' between two specs needs spaces:
`a - b`). All units of one model share one forward pass, whichever layers they are on.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evolver_common import BadInput
from evolver_common.registry import Registry
from neurons.base import Neuron
from neurons.cnn import CNNUnit, ModelReader
from neurons.encoder import Encoder
from neurons.rig_folder import FolderRig
from neurons.rig_zmq import NetworkRig
from neurons.spec import UnitSpec
from neurons.template import Template
from neurons.v1 import V1Cell

# A word may hold commas only in a position (@X,Y), a bracketed list or an encoder's voxels=1,5,9.
_TOKEN = re.compile(r"\s*(?:(?P<punct>[()+*,-])|(?P<word>(?:@\d+,\d+|voxels=\d+(?:-\d+)?(?:,\d+(?:-\d+)?)+"
                    r"|\[[^\]]*\]|[^\s()+*,\[\]])+))")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda r: r.mean(dim=1), "max": lambda r: r.amax(dim=1), "min": lambda r: r.amin(dim=1),
}
FUNCTIONS = (*REDUCTIONS, "onehot")
EXPRESSION_HELP = (
    "An objective is a spec (resnet50:layer4:unit12, v1:complex:ori=45, template:IMAGE[:MODEL:LAYER], "
    "encoder:MODEL_DIR:roi=NAME) or an "
    "expression of specs: sums and differences (spaces around '-'), number*expression, parentheses, "
    "mean(SET), max(SET), min(SET) and onehot(SET, UNIT[, mean|max]), where SET is a unit range or list "
    "such as resnet50:layer4:unit0-63 or resnet50:layer4:unit[1,5,9]."
)


# ---------------------------------------------------------------------------------------------- syntax

@dataclass(frozen=True)
class Leaf:
    """A neuron spec; `outputs` is how many responses it gives per image."""

    spec: str
    outputs: int


@dataclass(frozen=True)
class Weighted:
    """sum of weight * term, plus a constant."""

    terms: tuple[tuple[float, object], ...]
    constant: float = 0.0


@dataclass(frozen=True)
class Reduce:
    how: str
    argument: object


@dataclass(frozen=True)
class OneHot:
    population: Leaf
    target: int  # index into the population's units
    unit: int
    how: str


def _outputs(node) -> int:
    """Responses per image of a node (0 for a constant)."""
    if isinstance(node, float):
        return 0
    if isinstance(node, Leaf):
        return node.outputs
    if isinstance(node, Weighted):
        return max((_outputs(t) for _, t in node.terms), default=0)
    return 1  # Reduce, OneHot


# Deeper nesting (of parentheses, functions and signs) than this is refused: no objective needs it,
# and it would exhaust Python's recursion.
MAX_DEPTH = 64


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.depth = 0
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, position)
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if not match:
                if not text[position:].strip():
                    break
                self.fail(position + len(text[position:]) - len(text[position:].lstrip()), "unexpected character")
            kind = "punct" if match["punct"] else "word"
            self.tokens.append((kind, match[kind], match.start(kind)))
            position = match.end()
        self.index = 0

    def fail(self, position: int, reason: str, help: str = EXPRESSION_HELP):
        shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
        raise BadInput(f"Malformed neuron expression at character {position + 1}: {reason}.\n  {shown}\n  "
                       f"{' ' * min(position, 120)}^\n{help}")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "", len(self.text))

    def take(self, expected: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if expected is not None and token[1] != expected:
            self.fail(token[2], f"expected '{expected}', found {self.describe(token)}")
        self.index += 1
        return token

    @staticmethod
    def describe(token) -> str:
        return "the end" if token[0] == "end" else f"'{token[1]}'"

    def parse(self):
        if not self.tokens:
            self.fail(0, "empty expression")
        node = self.expr()
        if self.peek()[0] != "end":
            self.fail(self.peek()[2], f"expected '+', '-', '*' or the end, found {self.describe(self.peek())}")
        if _outputs(node) == 0:
            self.fail(0, "the expression names no neuron")
        return node

    def expr(self):
        start = self.peek()[2]
        terms = [(1.0, self.term())]
        while self.peek()[1] in ("+", "-"):
            sign = 1.0 if self.take()[1] == "+" else -1.0
            terms.append((sign, self.term()))
        return terms[0][1] if len(terms) == 1 else self.combine(terms, start)

    def term(self):
        start = self.peek()[2]
        factors = [self.unary()]
        while self.peek()[1] == "*":
            self.take()
            factors.append(self.unary())
        variable = [f for f in factors if not isinstance(f, float)]
        if len(variable) > 1:
            self.fail(start, "a product may have only one factor that is not a number")
        scale = float(np.prod([f for f in factors if isinstance(f, float)]))
        return variable[0] if variable and scale == 1.0 else (self.combine([(scale, variable[0])], start)
                                                               if variable else scale)

    def nested(self, position: int, parse):
        """`parse()` one level deeper, refused beyond MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(position, f"nested more than {MAX_DEPTH} deep (parentheses, functions and signs)")
        try:
            return parse()
        finally:
            self.depth -= 1

    def unary(self):
        if self.peek()[1] == "-":
            start = self.take()[2]
            inner = self.nested(start, self.unary)
            return -inner if isinstance(inner, float) else self.combine([(-1.0, inner)], start)
        return self.primary()

    def primary(self):
        kind, text, position = self.peek()
        if text == "(":
            self.take()
            node = self.nested(position, self.expr)
            self.take(")")
            return node
        if kind != "word":
            self.fail(position, f"expected a spec, a number, a function or '(', found {self.describe(self.peek())}")
        self.take()
        if _NUMBER.fullmatch(text):
            if not np.isfinite(float(text)):
                self.fail(position, f"the number {text} is out of range")
            return float(text)
        if self.peek()[1] == "(":
            if text not in FUNCTIONS:
                self.fail(position, f"unknown function '{text}' (functions: {', '.join(FUNCTIONS)})")
            return self.nested(position, lambda: self.call(text, position))
        return self.leaf(text, position)

    def leaf(self, text: str, position: int) -> Leaf:
        kind = text.split(":", 1)[0]
        try:
            if kind in KINDS:  # checked now, built later
                return Leaf(text, KINDS.get(kind).outputs_of(text))
            unit = UnitSpec.parse(text)
        except BadInput as err:
            if len(self.tokens) == 1:  # a plain spec: its own message says all
                raise
            hint = " (a '-' between two specs needs spaces around it)" if "-" in text else ""
            self.fail(position, f"the spec '{text}' is malformed{hint}", help=str(err))
        return Leaf(str(unit), len(unit.units) if isinstance(unit.unit, tuple) else 1)

    def call(self, name: str, position: int):
        self.take("(")
        if name in REDUCTIONS:
            argument = self.expr()
            self.take(")")
            if _outputs(argument) == 0:
                self.fail(position, f"{name}(...) needs a set of units, not a number")
            return Reduce(name, argument)
        population_at = self.peek()[2]
        population = self.primary()
        if not isinstance(population, Leaf) or population.outputs < 2:
            self.fail(population_at, "onehot's first argument is a set of units, e.g. resnet50:layer4:unit0-63")
        self.take(",")
        kind, text, unit_at = self.take()
        if not text.isdigit():
            self.fail(unit_at, f"onehot's second argument is the target unit, a whole number; found '{text}'")
        units = UnitSpec.parse(population.spec).units
        if int(text) not in units:
            self.fail(unit_at, f"unit {text} is not in the set {population.spec}")
        how = "mean"
        if self.peek()[1] == ",":
            self.take()
            _, how, how_at = self.take()
            if how not in ("mean", "max"):
                self.fail(how_at, f"onehot's third argument is mean or max; found '{how}'")
        self.take(")")
        return OneHot(population, units.index(int(text)), int(text), how)

    def combine(self, terms: list[tuple[float, object]], start: int):
        """A Weighted node of `terms` (constants folded), or the constant itself."""
        constant = sum(w * t for w, t in terms if isinstance(t, float))
        variable = tuple((w, t) for w, t in terms if not isinstance(t, float))
        sizes = {_outputs(t) for _, t in variable}
        if len(sizes) > 1:
            self.fail(start, f"terms give different numbers of responses per image ({sorted(sizes)}); "
                             "reduce a set with mean(...), max(...) or onehot(...) first")
        return Weighted(variable, constant) if variable else constant


def parse(text: str):
    """The syntax tree of an objective expression; BadInput pointing at the first error."""
    return _Parser(text).parse()


def describe(node) -> str:
    """The canonical text of a syntax tree (what a run records)."""
    if isinstance(node, Leaf):
        return node.spec
    if isinstance(node, Reduce):
        return f"{node.how}({describe(node.argument)})"
    if isinstance(node, OneHot):
        return f"onehot({node.population.spec}, {node.unit}{'' if node.how == 'mean' else ', max'})"
    parts = []
    for weight, term in node.terms:
        inner = describe(term)
        inner = f"({inner})" if isinstance(term, Weighted) and len(term.terms) + bool(term.constant) > 1 else inner
        sign = "-" if weight < 0 else "+"
        magnitude = abs(weight)
        parts.append(f"{sign} {inner if magnitude == 1 else f'{magnitude:g}*{inner}'}")
    if node.constant:
        parts.append(f"{'-' if node.constant < 0 else '+'} {abs(node.constant):g}")
    text = " ".join(parts)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


# ---------------------------------------------------------------------------------------------- neurons

def _leaves(node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    if isinstance(node, Weighted):
        return [leaf for _, term in node.terms for leaf in _leaves(term)]
    return _leaves(node.argument if isinstance(node, Reduce) else node.population)


# By spec prefix; anything else is a CNN unit. Installed packages add kinds through the entry-point
# group `evolver.neurons` (name -> a Neuron class taking the spec), e.g. a lab's own rig.
KINDS: Registry[type[Neuron]] = Registry("neuron kind", group="evolver.neurons")
for _prefix, _kind in {"v1": V1Cell, "template": Template, "encoder": Encoder, "folder": FolderRig,
                       "zmq": NetworkRig}.items():
    KINDS.register(_prefix, _kind)


def _is_unit(leaf: Leaf) -> bool:
    return leaf.spec.split(":", 1)[0] not in KINDS


class Objective(Neuron):
    """A composite objective: evaluates a syntax tree, with one forward pass per CNN model."""

    def __init__(self, tree, weights: str | Path = "pretrained", device: str = "auto", precision: str = "auto"):
        self.tree = tree
        self.spec = describe(tree)
        self.outputs = _outputs(tree)
        units = {leaf.spec: UnitSpec.parse(leaf.spec) for leaf in _leaves(tree) if _is_unit(leaf)}
        layers: dict[str, list[str]] = {}
        for unit in units.values():
            layers.setdefault(unit.model, []).append(unit.layer)
        self.readers = {model: ModelReader(model, names, weights, device, precision) for model, names in layers.items()}
        self.neurons: dict[str, Neuron] = {spec: CNNUnit(unit, reader=self.readers[unit.model])
                                           for spec, unit in units.items()}
        for leaf in _leaves(tree):
            if leaf.spec not in self.neurons:
                self.neurons[leaf.spec] = KINDS.create(leaf.spec.split(":", 1)[0], leaf.spec, weights=weights,
                                                       device=device, precision=precision)
        parts = list(self.neurons.values())
        self.weights = "; ".join(sorted({p.weights for p in parts}))
        self.device = next((p.device for p in parts if p.device.type != "cpu"), parts[0].device)
        self.precision = next((p.precision for p in parts if p.precision != "fp32"), "fp32")

    def compile(self) -> None:
        for neuron in self.neurons.values():  # CNN units compile the reader they share, once
            neuron.compile()

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        layers = {model: reader.read(images) for model, reader in self.readers.items()}
        return self._evaluate(self.tree, images, layers)

    def _evaluate(self, node, images: torch.Tensor, layers: dict) -> torch.Tensor:
        if isinstance(node, Leaf):
            neuron = self.neurons[node.spec]
            if _is_unit(node):
                return neuron.select(layers[neuron.unit.model]).to(self.device)
            if not torch.is_grad_enabled():  # the plain path: recorded neurons have no differentiable one
                return torch.as_tensor(neuron.respond(images), dtype=torch.float32, device=self.device)
            return neuron.differentiable(images).to(self.device)
        if isinstance(node, Weighted):
            total = sum(w * self._evaluate(t, images, layers) for w, t in node.terms)
            return total + node.constant
        if isinstance(node, Reduce):
            responses = self._evaluate(node.argument, images, layers)
            return REDUCTIONS[node.how](responses if responses.ndim == 2 else responses[:, None])
        responses = self._evaluate(node.population, images, layers)
        rest = torch.cat([responses[:, :node.target], responses[:, node.target + 1:]], dim=1)
        return responses[:, node.target] - REDUCTIONS[node.how](rest)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.differentiable(images).double().cpu().numpy()
