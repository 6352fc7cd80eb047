"""The main job's one-sentence verdict: the interval decides, and a budget that cannot train says where the evidence is."""

from lit_block.pipeline import verdict


def test_an_interval_above_zero_claims_recovery():
    line = verdict({"kl_gap_closed": 0.4, "kl_gap_closed_low": 0.1, "kl_gap_closed_high": 0.6}, steps=60)
    assert line.startswith("KL gap closed 40.0% (95% interval 10.0% to 60.0%)") and "recovered part" in line
    assert "corpus's own kinds of text" in line and "scripts/distill_recipe.py" in line  # in-domain; where unseen text is


def test_an_interval_through_zero_claims_nothing_and_points_to_the_gpu_recipe():
    line = verdict({"kl_gap_closed": 0.05, "kl_gap_closed_low": -0.2, "kl_gap_closed_high": 0.15}, steps=60)
    assert "not distinguishable" in line and "scripts/distill_recipe.py" in line and "recovered" not in line


def test_a_missing_interval_is_not_read_as_recovery():
    line = verdict({"kl_gap_closed": 0.3}, steps=5)
    assert "not distinguishable" in line
