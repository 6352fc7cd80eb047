"""scripts/kind_prior_study.py: the settings share one segmenter's features and cut as segmenters built with them."""

from __future__ import annotations

from conftest import load_script

from lit_block.segmentation.evaluation import WithWeights
from lit_block.segmentation.segmenter import FINE_INLINE_WEIGHT, MID_SENTENCE_WEIGHT, Segmenter

TEXT = "".join(f"Verse {i} tells how the ship\nsailed on. And the crew slept. Then\nthey woke.\n" for i in range(40))


def test_each_setting_cuts_as_a_segmenter_built_with_its_weights(random_checkpoint, tiny_tokenizer_dir):
    study = load_script("kind_prior_study")
    options = {"tokenizer": str(tiny_tokenizer_dir), "encoder_dtype": "float32"}
    shared = Segmenter("segmenter", str(random_checkpoint), **options)
    doc = shared.prepare(TEXT)
    cuts = {}
    for name, weights in study.SETTINGS.items():
        view = WithWeights(shared, weights)
        built = Segmenter("segmenter", str(random_checkpoint), **options, **weights)
        own = built.prepare(TEXT)
        for level in ("coarse", "middle", "fine"):
            cuts[name, level] = view.cut(doc, level, target_tokens=30)
            assert cuts[name, level] == built.cut(own, level, target_tokens=30)
    restored = (shared.fine_inline_weight, shared.mid_sentence_weight)
    assert restored == (FINE_INLINE_WEIGHT, MID_SENTENCE_WEIGHT)  # each setting's weights were put back
    assert cuts["V0", "fine"] != cuts["V2", "fine"]  # the settings differ on this text: the check above has teeth


def test_pooled_comparison_pairs_each_setting_with_v0():
    study = load_script("kind_prior_study")

    def entry(errors):  # an evaluate entry over documents of 100 windows
        return {"pk": sum(errors) / (100 * len(errors)), "documents": [[e, e, 100] for e in errors]}

    errors = {"V0": [10, 12, 9, 11], "V1": [10, 12, 9, 11], "V2": [20, 22, 19, 21]}
    results = {name: {(m, lv, c): entry(e if m == "segmenter" else [40] * 4)
                      for m in ("segmenter", "fixed") for lv in ("coarse", "middle", "fine") for c in ("a", "all")}
               for name, e in errors.items()}
    _, found = study.pooled_comparison(results, "folds")
    assert found["V1", "fine"][0] == 0 and found["V0", "coarse"][0] == 0
    point, low, high = found["V2", "middle"]
    assert abs(point - 0.10) < 1e-9 and 0 < low <= high  # V2 errs more on every document: wholly above zero
