from moequant.calib.repetition import distinct_ratio, longest_repeated_span, repetition_summary, set_distinct_ratio


def test_a_loop_is_caught_and_fresh_text_is_not():
    loop = [5, 6, 7] * 10
    fresh = list(range(30))
    assert distinct_ratio(fresh) == 1.0 and longest_repeated_span(fresh) == 0
    assert distinct_ratio(loop) == 3 / 27
    assert longest_repeated_span(loop) == 27  # positions 0..26 and 3..29 overlap
    assert longest_repeated_span([1, 2, 3, 9, 1, 2, 3, 8]) == 3


def test_copies_across_samples_count_in_the_set_ratio():
    sample = list(range(10))
    assert distinct_ratio(sample) == 1.0
    assert set_distinct_ratio([sample, sample]) == 0.5
    summary = repetition_summary([sample, [4, 4, 4, 4, 4, 4]])
    assert summary["sample_longest_repeat"] == [0, 5] and summary["longest_repeat_max"] == 5
