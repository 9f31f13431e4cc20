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
