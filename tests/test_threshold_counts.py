"""scripts/threshold_counts.py: the block count at the default threshold against the gold count."""

from __future__ import annotations

from conftest import load_script

from lit_block.segmentation.segmenter import Segmenter


def test_ratio_is_blocks_cut_over_gold_blocks_and_skips_levels_without_gold(tiny_tokenizer_dir):
    counts = load_script("threshold_counts")
    text = "".join(f"Paragraph {i} says one thing.\n\n" for i in range(40))
    starts = [i * len("Paragraph 0 says one thing.\n\n") for i in range(1, 40)]
    row = {"text": text, "boundaries_coarse": [], "boundaries_middle": starts[9::10], "boundaries_fine": starts}
    seg = Segmenter("regex", tokenizer=str(tiny_tokenizer_dir))
    doc = seg.prepare(text)
    ratios = counts.count_ratios(seg, [row])
    assert ratios["coarse"] == []  # no gold boundary: nothing to compare
    for level, gold in (("middle", 3), ("fine", 39)):
        assert ratios[level] == [(len(seg.cut(doc, level, threshold=0.5)) + 1) / (gold + 1)]
    assert counts.spread([1.0, 2.0, 3.0]).startswith("2.00 [") and counts.spread([]) == "-"
    assert counts.spread([0.5]) == "0.50 [0.50, 0.50]"
    assert "| x | - | " in counts.table({"x": ratios})
