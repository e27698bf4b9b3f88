"""dnd.reporting: the one number formatter and the end every report command shares."""

import math

from dnd.reporting.format import ci_text, number, pct, signed
from dnd.reporting.output import figure_link, read_paper_numbers


def test_number_formats_and_says_n_a():
    assert number(0.12345) == "0.1" and number(3, 2) == "3.00" and number(-0.05, 1, sign=True) == "-0.1"
    assert signed(2.0) == "+2.0" and number("1.25", 1) == "1.2"
    assert all(number(x) == "n/a" for x in (None, math.nan, math.inf, "x"))
    assert math.isnan(pct(None)) and pct(0.5) == 50.0
    assert ci_text({"acc": 1.0, "acc_ci_low": -0.5, "acc_ci_high": 2.5}) == "+1.0 points, [-0.5, +2.5]"


def test_missing_paper_numbers_are_empty_not_a_crash(tmp_path):
    assert read_paper_numbers(None) == {} and read_paper_numbers(tmp_path / "absent.yaml") == {}
    (tmp_path / "p.yaml").write_text("common_sense: {average_gain: 21}\n")
    assert read_paper_numbers(tmp_path / "p.yaml") == {"common_sense": {"average_gain": 21}}


def test_figure_link_is_relative_to_the_report(tmp_path):
    assert figure_link(tmp_path / "r" / "figures" / "f.png", tmp_path / "r" / "report.md") == "figures/f.png"
