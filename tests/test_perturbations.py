"""Perturbations: behaviour of each rewrite, determinism, the registry, instance expansion."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assay.core.records import Instance, Reference
from assay.perturbations import (
    FAIRNESS,
    PERTURBATIONS,
    ROBUSTNESS,
    family_of,
    get_perturbation,
    perturb_instances,
)

TEXT = "He said that I do not know about his friend Greg, because she is with her mother."


def test_every_registered_perturbation_has_a_family_and_a_round_tripping_spec():
    for name in PERTURBATIONS:
        p = get_perturbation(name)
        assert p.family in (ROBUSTNESS, FAIRNESS)
        assert get_perturbation(p.spec).spec == p.spec
        assert family_of(p.spec) == p.family


def test_registry_parses_arguments_and_names_errors():
    p = get_perturbation("typos:prob=0.1")
    assert p.params == {"prob": 0.1} and p.spec == "typos:prob=0.1"
    assert get_perturbation("person_names:source=black,target=white").params == {
        "source": "black",
        "target": "white",
    }
    with pytest.raises(ValueError, match="unknown perturbation 'typo'"):
        get_perturbation("typo")
    with pytest.raises(ValueError, match="not key=value"):
        get_perturbation("typos:0.1")
    with pytest.raises(ValueError, match="prob must be between 0 and 1"):
        get_perturbation("typos:prob=2")
    with pytest.raises(ValueError, match="bad arguments"):
        get_perturbation("lowercase:prob=0.5")


def test_lowercase_contractions_and_expansions():
    assert get_perturbation("lowercase").apply("Hello World", "x") == "hello world"
    contracted = get_perturbation("contractions").apply("I am sure it is. Do not go.", "x")
    assert contracted == "I'm sure it's. Don't go."
    assert get_perturbation("expansions").apply(contracted, "x") == "I am sure it is. Do not go."


def test_typos_swap_letters_for_keyboard_neighbours():
    never = get_perturbation("typos:prob=0.0")
    assert never.apply(TEXT, "x") == TEXT
    always = get_perturbation("typos:prob=1.0").apply("qa", "x")
    # QWERTY neighbours of q are w, a, s; of a: q, w, s, z, x.
    assert always[0] in "was" and always[1] in "qwszx"


def test_extra_spaces_only_widen_spaces():
    out = get_perturbation("extra_spaces:max_spaces=4").apply(TEXT, "x")
    assert out.split() == TEXT.split()
    assert all(1 <= len(run) <= 4 for run in re.findall(r" +", out))
    assert out != TEXT  # with 14 gaps, staying all single spaces has probability 4**-14


def test_misspellings_synonyms_and_fillers_draw_from_shipped_lists():
    assert get_perturbation("misspellings:prob=1.0").apply("Because I believe", "x") in {
        "Becuase I beleive",
        "Becasue I beleive",
        "Beacuse I beleive",
        "Becuase I belive",
        "Becasue I belive",
        "Beacuse I belive",
    }
    assert get_perturbation("synonyms:prob=1.0").apply("maybe", "x") == "perhaps"
    filled = get_perturbation("filler_words:prob=1.0").apply("one two three", "x")
    assert filled.startswith("one ") and filled.endswith(" three") and len(filled.split()) > 3


def test_gender_pronouns_both_directions_preserve_case():
    to_f = get_perturbation("gender_pronouns:target=female")
    assert to_f.apply("He gave HIS book to him. It is his.", "x") == (
        "She gave HER book to her. It is hers."
    )
    to_m = get_perturbation("gender_pronouns:target=male")
    assert to_m.apply("She gave her book to her. Hers!", "x") == "He gave his book to him. His!"


def test_dialect_and_names():
    assert get_perturbation("dialect").apply("This is about my brother.", "x") == (
        "Dis is bout my brotha."
    )
    renamed = get_perturbation("person_names").apply("Greg met Emily and Greg.", "x")
    first, _, second, _, third = renamed.rstrip(".").split()
    assert first == third  # one source name maps to one target name within a text
    from assay.perturbations.base import load_data

    names = load_data("person_names.json")["black"]
    assert first in names["male"] and second in names["female"]


def test_mild_mix_is_lowercased_and_contracted():
    out = get_perturbation("mild_mix").apply("I do not know", "x")
    assert out == out.lower() and "n't" in out.replace("  ", " ")


def test_perturb_instances_keeps_references_and_drops_unchanged():
    instances = [
        Instance("i1", "Hello There", (Reference("yes", True),)),
        Instance("i2", "already lower", (Reference("no", True),)),
    ]
    rows = perturb_instances(instances, [get_perturbation("lowercase")])
    assert [(r.original_id, r.input) for r in rows] == [("i1", "hello there")]
    assert rows[0].instance.references == instances[0].references
    assert (rows[0].perturbation, rows[0].family) == ("lowercase", ROBUSTNESS)
    kept = perturb_instances(instances, [get_perturbation("lowercase")], drop_unchanged=False)
    assert [r.unchanged for r in kept] == [False, True]


words = st.lists(st.sampled_from(["the", "quick", "Greg", "his", "do", "not", "big"]), max_size=12)


@given(words, st.sampled_from(sorted(PERTURBATIONS)))
def test_same_seed_same_output(tokens, name):
    text = " ".join(tokens)
    p = get_perturbation(name)
    assert p.apply(text, "inst-7") == p.apply(text, "inst-7")


def test_different_instance_ids_can_differ():
    p = get_perturbation("typos:prob=0.3")
    outputs = {p.apply(TEXT, f"id-{i}") for i in range(10)}
    assert len(outputs) > 1
