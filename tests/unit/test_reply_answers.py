"""The answers to STOP, START and HELP (`service.replies.answer`): short whatever the number
of shops a reply is for."""

from __future__ import annotations

from service import replies


def test_a_help_for_many_shops_answers_with_the_help_texts_that_fit():
    # Given twenty shops with help texts of 300 characters
    shops = [(f"Shop {n}", f"{n:02d}" + "x" * 298) for n in range(20)]
    # When a HELP is for all of them
    text = replies.answer("help", shops)
    # Then the answer holds as many whole help texts as fit (it held all twenty: 6,019
    # characters, some 40 segments sent and charged for one HELP)
    assert text.split("\n") == [help_text for _, help_text in shops[:3]]
    assert len(text) <= replies.MAX_HELP_LENGTH


def test_one_long_help_text_is_answered_whole():
    assert replies.answer("help", [("A", "y" * 480)]) == "y" * 480


def test_a_stop_for_many_shops_names_them_by_count():
    text = replies.answer("stop", [(f"Shop number {n}", "h") for n in range(40)])
    assert text.startswith("40 shops: you are unsubscribed")
