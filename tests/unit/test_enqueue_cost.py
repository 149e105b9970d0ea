"""The reservation's per-name cost is computed once per name shape; shapes must be exact."""

from __future__ import annotations

import pytest

from service import composition
from service.audience import name_shape

TEMPLATES = [
    "Hi {first_name}, " + "a" * 140,
    "Hi {first_name}! " + "b" * 60 + " https://x.example/p",
    "Γεια {first_name}",
    "{first_name}" + "€" * 75,
]
SHORT, UNSUB = "http://127.0.0.1:8000/r/xxxxxxxxxx", "http://127.0.0.1:8000/u/" + "x" * 43


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize(
    "names", [("Anna", "Bert", "Cleo"), ("Zoë", "Łuc", "ωma"), ("", None), ("x" * 30, "y" * 30)]
)
def test_names_of_one_shape_cost_the_same(template, names):
    # Given names that share a shape, Then they share the cost the reservation uses
    assert len({name_shape(name) for name in names}) == 1
    assert len({composition.cost_upper_bound(template, name, SHORT, UNSUB) for name in names}) == 1


def test_names_with_extension_or_astral_characters_are_their_own_shape():
    assert name_shape("A€") == "A€"
    assert name_shape("Jo😀") == "Jo😀"
    assert name_shape("Anna") == name_shape("Bert") != name_shape("Zoë")
