"""Imports run one way: no circle among the project's modules, and `neurons` and `generators` import only
`evolver_common` of the project (docs/design.md, "Packages, one direction")."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"
spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_no_module_imports_back():
    assert import_graph.circles(import_graph.graph()) == []


def test_a_circle_is_found():
    assert import_graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_neurons_and_generators_import_only_the_common_package():
    for name, imported in import_graph.graph().items():
        if name.split(".")[0] in ("neurons", "generators"):
            assert all(m.split(".")[0] in ("evolver_common", name.split(".")[0]) for m in imported), (name, imported)
