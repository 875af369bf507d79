"""Retention in `glotta compare`: a ratio to the teacher, and no ratio to a teacher that scored 0."""

import pytest

from glotta.evaluate.compare import f1_retention


def test_f1_retention_is_the_percentage_of_the_teacher_and_none_for_a_zero_teacher():
    assert f1_retention(0.45, 0.9) == pytest.approx(50.0)
    assert f1_retention(0.0, 0.5) == 0.0
    assert f1_retention(0.3, 0.0) is None
