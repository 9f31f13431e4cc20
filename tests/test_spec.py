import pytest

from evolver_common import BadInput
from neurons import UnitSpec


@pytest.mark.parametrize("text, expected", [
    ("resnet50:layer4:unit12", UnitSpec("resnet50", "layer4", 12)),
    ("resnet50:layer4:12", UnitSpec("resnet50", "layer4", 12)),
    ("alexnet:classifier.6:3", UnitSpec("alexnet", "classifier.6", 3)),
    ("resnet50:layer3.5.relu_2:7@3,4", UnitSpec("resnet50", "layer3.5.relu_2", 7, (3, 4))),
    ("vgg16:features.28:0@mean", UnitSpec("vgg16", "features.28", 0, "mean")),
])
def test_parse(text, expected):
    assert UnitSpec.parse(text) == expected
    assert UnitSpec.parse(str(expected)) == expected


@pytest.mark.parametrize("text", [
    "resnet50", "resnet50:layer4", "resnet50:layer4:unitX", "resnet50::1", ":layer4:1",
    "resnet50:layer4:1@", "resnet50:layer4:1@1", "resnet50:layer4:1@centre", "a:b:c:1", "resnet50:layer4:-1",
])
def test_malformed_specs_say_how_to_write_one(text):
    with pytest.raises(BadInput, match="MODEL:LAYER:UNIT"):
        UnitSpec.parse(text)


# ------------------------------------------------------------------ the one spec syntax and option check

from evolver_common.specs import parse_spec, typed_options  # noqa: E402


@pytest.mark.parametrize("text, fields, kind, address, options", [
    ("v1:complex:ori=45:sf=6", 1, "v1", ("complex",), {"ori": "45", "sf": "6"}),
    ("zmq:tcp://127.0.0.1:5555:timeout=5", 3, "zmq", ("tcp", "//127.0.0.1", "5555"), {"timeout": "5"}),
    ("folder:/data/a=b:channel=2", 1, "folder", ("/data/a=b",), {"channel": "2"}),  # an address may hold '='
    ("template:C:/img.png:resnet18:layer3", 3, "template", ("C", "/img.png", "resnet18", "layer3"), {}),
    ("stimuli:layers=3", 0, "stimuli", (), {"layers": "3"}),
])
def test_one_parser_for_every_kind(text, fields, kind, address, options):
    spec = parse_spec(text, "HELP", fields)
    assert (spec.kind, spec.address, spec.options) == (kind, address, options)
    assert list(spec.options) == list(options)  # in the order written


@pytest.mark.parametrize("text, problem", [
    ("v1:complex:ori=45:ori=30", "ori is given twice"),
    ("v1:complex:=45", "an option is KEY=VALUE"),
    ("v1:complex:ori=", "an option is KEY=VALUE"),
])
def test_a_malformed_option_is_named(text, problem):
    with pytest.raises(BadInput, match=f"Malformed spec '{text}' at .*{problem}. HELP"):
        parse_spec(text, "HELP")


def test_typed_options_convert_text_and_name_every_problem_at_once():
    kinds = {"n": int, "x": float, "flag": bool, "name": str, "limit": int | None}
    assert typed_options({"n": "3", "x": "0.5", "flag": "true", "limit": None}, kinds, "W") == \
        {"n": 3, "x": 0.5, "flag": True, "limit": None}
    with pytest.raises(BadInput) as err:
        typed_options({"n": "3.5", "x": "nan", "nmae": "a", "limit": "99999"}, kinds, "Options of W", "HELP")
    assert str(err.value) == (
        "Options of W: n='3.5' (a whole number up to 10,000); x='nan' (a finite number); unknown option nmae "
        "(closest: name); limit='99999' (a whole number up to 10,000 or nothing). Valid options: n (a whole number "
        "up to 10,000), x (a finite number), flag (true or false), name (text), limit (a whole number up to 10,000 "
        "or nothing). HELP")
    with pytest.raises(BadInput, match=r"n='3' \(a whole number\)"):  # typed values are not read from text
        typed_options({"n": "3"}, kinds, "W", from_text=False, max_int=float("inf"))


@pytest.mark.parametrize("make, fragment", [
    (lambda: __import__("neurons").create("v1:complex:ori=east"), "V1 cell spec 'v1:complex:ori=east': ori='east' (a finite number)"),
    (lambda: __import__("generators").create("stimuli:layers=x"), "Generator 'stimuli' does not take these options: layers='x' (a whole number)"),
    (lambda: __import__("evolver").RunConfig(generations="3"), "A run's options have the wrong types: generations='3' (a whole number)"),
    (lambda: __import__("evolver").optimizers.create("ga", 4, None, None, population="many"),
     "Invalid parameters for optimizer 'ga': population='many' (a whole number up to 10,000)"),
])
def test_every_kind_of_option_is_refused_in_one_format(make, fragment):
    with pytest.raises(BadInput) as err:
        make()
    assert fragment in str(err.value) and "Valid options: " in str(err.value)
