"""A unit of a CNN as a neuron: the network cut after the unit's layer, read at one position."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evolver_common import BadInput, autocast, nearest, resolve_device, resolve_precision
from neurons.base import Neuron
from neurons.model_source import InputConfig, ModelSource
from neurons.models import build_model
from neurons.layouts import Layout, layout_of, model_facts
from neurons.precision import bf16_verdict
from neurons.spec import UnitSpec


def _no_inplace(network: nn.Module) -> None:
    """Turn off in-place activations so that no later op overwrites an activation we read."""
    for module in network.modules():
        if hasattr(module, "inplace"):
            module.inplace = False


def _layer_names(network: nn.Module, source: ModelSource) -> list[str]:
    """Names a layer can be given by: graph nodes (`layer3.5.relu_2`) and module paths (`layer4`)."""
    nodes = source.graph_node_names(network)[1:]  # the first node is the input placeholder
    return nodes + [name for name, _ in network.named_modules() if name and name not in nodes]


@contextlib.contextmanager
def untraceable(model: str):
    """Turn a failure of torch.fx tracing (or of running the traced graph) inside a model's own code into
    a BadInput naming why; a plain ValueError (FX's word for a node not in the graph) and BadInput pass."""
    try:
        yield
    except BadInput:
        raise
    except Exception as err:  # noqa: BLE001 - tracing fails inside a model's own code, in many ways
        if type(err) is ValueError:  # torch's TraceError is a ValueError too, and stays a tracing failure
            raise
        raise BadInput(f"Model '{model}' cannot be cut after a layer: torch.fx could not trace it "
                       f"({type(err).__name__}: {str(err)[:200]}). Its code takes decisions on the values of its "
                       "inputs (data-dependent control flow) or builds tensors tracing cannot follow, so evolver "
                       "cannot read its units as it is; a unit of another model, or of a traceable copy of this "
                       "one given with neurons.from_module, can.") from None


LISTED_LAYERS = 60  # a module's layer names an error lists (a ViT has hundreds)


def _cut_network(network: nn.Module, source: ModelSource, layers: list[str], model: str) -> nn.Module:
    """The network up to the deepest of `layers` only; what comes after it is never computed."""
    try:
        with untraceable(model):
            return source.feature_extractor(network, layers)
    except ValueError:  # FX's word for a node that is not in the graph
        pass
    valid = _layer_names(network, source)
    layer = next((name for name in layers if name not in valid), layers[0])
    if getattr(source, "module", None) is None:
        listed = f"`evolver layers {model}` lists its {len(valid)} layer names."
    else:  # a module of this session, which no command can see: its names, here
        shown = ", ".join(valid[:LISTED_LAYERS]) + (f", … ({len(valid) - LISTED_LAYERS} more)"
                                                    if len(valid) > LISTED_LAYERS else "")
        listed = f"Its layers: {shown}."
    raise BadInput(f"Model '{model}' has no layer '{layer}' (closest: {nearest(layer, valid)}). {listed}")


def _fold_batch_norm(network: nn.Module) -> nn.Module:
    """The network with each eval-mode batch norm folded into the conv before it (one op instead of
    two: resnet50 at batch 17 on 2 cores, 563 → 450 ms; responses within bf16's rounding)."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(network, inplace=True)
    except Exception:  # noqa: BLE001 - a graph FX cannot retrace runs unfused, as it would anyway
        return network


def _to_device(network: nn.Module, device: torch.device) -> nn.Module:
    """On `device`, its conv weights channels-last where every 4-d tensor of the network allows it
    (faster convolutions on CPUs and GPUs); as it is where some buffer refuses (Swin's)."""
    try:
        return network.to(device, memory_format=torch.channels_last)
    except RuntimeError:
        return network.to(device)


class Float32(nn.Module):
    """A layer run in fp32 whatever the autocast around it: a unit's responses then carry fp32's
    resolution rather than bf16's 8 bits (near an optimum, distinct images would tie)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer, self.fp32 = layer, True

    def forward(self, *args, **kwargs):
        if not self.fp32:  # neurons.precision measures what bf16 would cost here
            return self.layer(*args, **kwargs)
        device = next(self.layer.parameters()).device
        with torch.autocast(device.type, enabled=False):
            return self.layer(*map(_float, args), **{k: _float(v) for k, v in kwargs.items()})


def _float(value):
    """A floating-point tensor in fp32; anything else as it is."""
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _read_layers_in_fp32(network: nn.Module) -> None:
    """Run in fp32 the nearest weighted layer (conv, linear, layer scale) before each read layer of a
    cut network (an FX GraphModule): what follows it (activation, pooling, residual add) keeps fp32."""
    graph = getattr(network, "graph", None)
    output = next((node for node in graph.nodes if node.op == "output"), None) if graph is not None else None
    if output is None or not hasattr(output.args[0], "values"):  # FX's immutable_dict of the read layers
        return
    for read in output.args[0].values():
        weighted = _nearest_weighted(network, read)
        if weighted is not None and not isinstance(network.get_submodule(weighted), Float32):
            parent, _, name = weighted.rpartition(".")
            holder = network.get_submodule(parent) if parent else network
            setattr(holder, name, Float32(getattr(holder, name)))


def _nearest_weighted(network: nn.Module, node: torch.fx.Node) -> str | None:
    """The target of the call_module node with parameters fewest steps up the graph from `node`."""
    frontier, seen = [node], set()
    while frontier:
        for current in frontier:
            if current.op == "call_module" and any(True for _ in network.get_submodule(current.target).parameters()):
                return current.target
        seen.update(frontier)
        frontier = [a for current in frontier for a in current.all_input_nodes if a not in seen]
    return None


class Preprocess(nn.Module):
    """Resize generator images to the model's input size and normalise with the model's statistics."""

    def __init__(self, config: InputConfig):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.config.size:
            mode = self.config.interpolation if self.config.interpolation in ("bilinear", "bicubic") else "bilinear"
            images = F.interpolate(images, size=self.config.size, mode=mode, antialias=True, align_corners=False)
        return (images - self.mean) / self.std


class ModelReader:
    """A CNN cut after the deepest of `layers`: one forward pass gives every one of them.

    Units of one model in a composite objective share a reader, hence one forward pass.

    Args:
        model: a bundled, timm or torchvision model name.
        layers: layer names (`evolver layers MODEL`).
        weights: 'pretrained', 'random' (seeded) or the path of a .safetensors/.pth state dict.
        device, precision: see `evolver_common.compute`.
        source: the family that builds `model` (default: the first that has it; `neurons.from_module`
            passes one holding the user's network).
    """

    def __init__(self, model: str, layers: list[str], weights: str | Path = "pretrained",
                 device: str = "auto", precision: str = "auto", source: ModelSource | None = None):
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        network, source, self.weights = build_model(model, weights, source)
        _no_inplace(network)
        self.input_config = source.input_config(model, network)
        facts, modules = model_facts(network), dict(network.named_modules())
        cut = _fold_batch_norm(_cut_network(network, source, self.layers, model).eval())
        _read_layers_in_fp32(cut)
        self.network = _to_device(nn.Sequential(Preprocess(self.input_config), cut).eval().requires_grad_(False),
                                  self.device)
        probe = torch.zeros(1, 3, *self.input_config.size, device=self.device)
        with untraceable(model), torch.no_grad():
            self.layouts = {name: _layout(out, facts, modules.get(name)) for name, out in self.network(probe).items()}
        self.precision_check = None  # the bf16 ranking check behind precision 'auto' (neurons.precision)
        self.eager: nn.Module | None = None  # the uncompiled network, once `compile` was called
        if precision == "auto" and self.precision == "bf16":
            self.precision_check = bf16_verdict({"model": model, "layers": self.layers, "weights": self.weights},
                                                self.network, self.device, self.input_config.size)
            self.precision = "bf16" if self.precision_check["bf16"] else "fp32"
        with torch.no_grad():
            self.layer_shapes = {name: tuple(out.shape[1:]) for name, out in self.read(probe).items()}

    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's activations for `images` (n, 3, H, W) in [0, 1]: name -> (n, C), (n, C, H', W')
        (channels-last layers permuted so) or tokens (n, N, C), float32."""
        images = images.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            try:
                outputs = self.network(images)
            except torch._dynamo.exc.TorchDynamoException as error:  # compiles lazily, on each new shape
                self._uncompile(error)
                outputs = self.network(images)
        return {name: out.float().permute(0, 3, 1, 2) if self.layouts[name] and self.layouts[name].channels_last
                else out.float() for name, out in outputs.items()}

    def compile(self) -> None:
        """torch.compile the network (inductor, weights frozen as constants): each conv, its bias, ReLU
        and residual add become one kernel. resnet50, batch 40, bf16 on 2 cores: 32 → 41 images/s,
        after a compile on the first batch of each new size (~25 s the first time, ~10 s from
        inductor's disk cache)."""
        if self.eager is None:
            self.eager = self.network
            self.network = torch.compile(self.eager, options={"freezing": True})

    def _uncompile(self, error: Exception) -> None:
        if self.eager is None:
            raise error
        warnings.warn(f"torch.compile failed for {self.model} ({type(error).__name__}: {str(error)[:300]}); "
                      "running it uncompiled.", stacklevel=3)
        self.network = self.eager


def check_units(unit: UnitSpec, layout: Layout | None, shape: tuple[int, ...]) -> None:
    """BadInput unless `unit`'s units and position exist in a layer of `layout` (output shape `shape`)."""
    where = f"layer '{unit.layer}' of {unit.model}"
    if layout is None:
        raise BadInput(f"The output of {where} has shape {shape}: neither channels (C,), a grid (C, H, W) nor "
                       "tokens (N, C) of a patch grid, one a image (attention windows fold the grid into the "
                       f"batch); read a unit of another layer (`evolver layers {unit.model}` lists them with their "
                       "units).")
    outside = [u for u in unit.units if not 0 <= u < layout.units]
    if outside:
        raise BadInput(f"Unit {outside[0]} is out of range: {where} has {layout.units} units (0–{layout.units - 1}).")
    if layout.kind == "vector" and unit.position is not None:
        raise BadInput(f"{where} is not spatial (shape {shape}); drop the @{unit.position} position.")
    if layout.kind == "grid" and unit.position == "cls":
        raise BadInput(f"{where} is a grid, not tokens: @cls reads a transformer's class token; use @X,Y or @mean.")
    if unit.position == "cls" and not layout.class_token:
        raise BadInput(f"{where} has no class token ({layout.describe()}); read a patch with @X,Y or their mean "
                       "with @mean.")
    if isinstance(unit.position, tuple):
        (x, y), (h, w) = unit.position, layout.grid
        if not (0 <= x < w and 0 <= y < h):
            raise BadInput(f"Position @{x},{y} is outside {where}, whose grid is {w}×{h} (X×Y).")


def select_units(layer: torch.Tensor, unit: UnitSpec, layout: Layout) -> torch.Tensor:
    """`unit`'s responses from a layer's activations as `ModelReader.read` gives them: (n,) for one
    unit, (n, k) for a set. On a grid or tokens the default is the centre, or a transformer's class token."""
    units = list(unit.units)
    if layout.kind == "grid":
        out = layer[:, units]
        if unit.position == "mean":
            out = out.mean(dim=(2, 3))
        else:
            x, y = unit.position or (out.shape[3] // 2, out.shape[2] // 2)
            out = out[:, :, y, x]
    elif layout.kind == "tokens":
        tokens = layer[:, :, units]
        if unit.position == "mean":
            out = tokens[:, layout.prefix:].mean(dim=1)
        elif unit.position == "cls" or (unit.position is None and layout.class_token):
            out = tokens[:, 0]
        else:
            (h, w) = layout.grid
            x, y = unit.position or (w // 2, h // 2)
            out = tokens[:, layout.prefix + y * w + x]
    else:
        out = layer[:, units]
    return out if isinstance(unit.unit, tuple) else out[:, 0]


class CNNUnit(Neuron):
    """One unit of a timm or torchvision CNN, or a set of units of one layer (responses (n, k)).

    Args:
        spec: 'MODEL:LAYER:UNITS[@X,Y|@mean]' (see `neurons.spec`).
        weights, device, precision: as `ModelReader`.
        reader: a `ModelReader` of the model that already reads the layer (shared in composites).
    """

    def __init__(self, spec: str | UnitSpec, weights: str | Path = "pretrained",
                 device: str = "auto", precision: str = "auto", reader: ModelReader | None = None):
        self.unit = spec if isinstance(spec, UnitSpec) else UnitSpec.parse(spec)
        self.spec = str(self.unit)
        self.reader = reader or ModelReader(self.unit.model, [self.unit.layer], weights, device, precision)
        self.weights, self.device, self.precision = self.reader.weights, self.reader.device, self.reader.precision
        self.input_config, self.network = self.reader.input_config, self.reader.network
        self.layer_shape = self.reader.layer_shapes[self.unit.layer]
        self.layout = self.reader.layouts[self.unit.layer]
        self.outputs = len(self.unit.units) if isinstance(self.unit.unit, tuple) else 1
        check_units(self.unit, self.layout, self.layer_shape)

    @torch.no_grad()
    def activations(self, images: torch.Tensor) -> torch.Tensor:
        """The whole layer's activations for `images` (n, 3, H, W) in [0, 1]: (n, C[, H', W']) float32."""
        return self.reader.read(images)[self.unit.layer]

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        return self.select(self.reader.read(images))

    def select(self, layers: dict[str, torch.Tensor]) -> torch.Tensor:
        """This unit's responses from a forward pass of its reader (`ModelReader.read`)."""
        return select_units(layers[self.unit.layer], self.unit, self.layout)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.differentiable(images).double().cpu().numpy()

    def compile(self) -> None:
        self.reader.compile()


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer: its name and its layout (None: no unit can be read from it)."""

    name: str
    layout: Layout | None

    @property
    def units(self) -> int | None:
        return self.layout.units if self.layout else None


def list_layers(model: str) -> list[LayerInfo]:
    """Every graph node of `model` with its layout at the model's input resolution."""
    network, source, _ = build_model(model, "random")
    _no_inplace(network)
    config = source.input_config(model, network)
    facts, modules = model_facts(network), dict(network.named_modules())
    with untraceable(model), torch.no_grad():
        nodes = source.graph_node_names(network)[1:]  # the first node is the input placeholder
        outputs = source.feature_extractor(network, nodes)(torch.zeros(1, 3, *config.size))
    return [LayerInfo(name, _layout(out, facts, modules.get(name))) for name, out in outputs.items()]


def _layout(output, facts, module: nn.Module | None) -> Layout | None:
    """The layout of a layer's output for one probe image; None where it is not a tensor of one row a
    image (a parameter, a shape, or attention windows that fold the grid into the batch, as in Swin)."""
    if not isinstance(output, torch.Tensor) or output.ndim == 0 or output.shape[0] != 1:
        return None
    return layout_of(tuple(output.shape[1:]), facts, module)
