"""The reservation's per-name cost is computed once per name shape; shapes must be exact."""

from __future__ import annotations

import pytest

from service import composition, creation
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


def test_names_with_extension_or_astral_characters_share_a_shape_by_units_and_septets():
    assert name_shape("A€") == name_shape("€B") == ("bound", 2, 3)
    assert name_shape("Jo😀") == ("bound", 4, 4)
    assert name_shape("A€") != name_shape("AB€")
    assert name_shape("Anna") == name_shape("Bert") != name_shape("Zoë")


@pytest.mark.parametrize(
    "template",
    [*TEMPLATES, "Hi {first_name} " + " ".join(f"https://ex{n}.example/p" for n in range(3))],
)
@pytest.mark.parametrize(
    "names",
    [("A€", "€B"), ("€" * 95 + "00001", "€" * 95 + "00002"), ("Jo😀", "😀Jo"), ("[]", "{}")],
)
def test_names_priced_by_the_length_bound_cost_the_same_and_never_less_than_exactly(
    template, names
):
    # Given names of one length-bound shape, Then they share the bound, and it is never
    # below the exact maximum of any of them
    assert len({name_shape(name) for name in names}) == 1
    bounds = {composition.length_cost_bound(template, name, SHORT, UNSUB) for name in names}
    assert len(bounds) == 1
    assert all(
        composition.cost_upper_bound(template, name, SHORT, UNSUB) <= min(bounds) for name in names
    )


def test_an_audience_of_distinct_names_with_extension_characters_is_priced_once(monkeypatch):
    # Given 1,000 names of 95 "€" and five digits, each distinct (a probe's hostile audience:
    # each was its own shape, priced over every URL combination, 5 s of CPU a name)
    calls: list[str | None] = []
    real = composition.length_cost_bound
    monkeypatch.setattr(
        composition,
        "length_cost_bound",
        lambda template, name, *rest: calls.append(name) or real(template, name, *rest),
    )
    cost = creation.pricing("Hi {first_name}", True, "http://127.0.0.1:8000")

    # When each is priced, Then the bound is computed once, and is the same for all
    assert len({cost("€" * 95 + f"{n:05d}") for n in range(1000)}) == 1
    assert len(calls) == 1
