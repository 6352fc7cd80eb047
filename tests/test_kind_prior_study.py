"""scripts/kind_prior_study.py: the settings share one segmenter's features and cut as segmenters built with them."""

from __future__ import annotations

from conftest import load_script

from lit_block.segmentation.segmenter import FINE_INLINE_WEIGHT, MID_SENTENCE_WEIGHT, Segmenter

TEXT = "".join(f"Verse {i} tells how the ship\nsailed on. And the crew slept. Then\nthey woke.\n" for i in range(40))


def test_each_setting_cuts_as_a_segmenter_built_with_its_weights(random_checkpoint, tiny_tokenizer_dir):
    study = load_script("kind_prior_study")
    options = {"tokenizer": str(tiny_tokenizer_dir), "encoder_dtype": "float32"}
    shared = Segmenter("segmenter", str(random_checkpoint), **options)
    doc = shared.prepare(TEXT)
    cuts = {}
    for name, weights in study.SETTINGS.items():
        view = study.WithWeights(shared, weights)
        built = Segmenter("segmenter", str(random_checkpoint), **options, **weights)
        own = built.prepare(TEXT)
        for level in ("coarse", "middle", "fine"):
            cuts[name, level] = view.cut(doc, level, target_tokens=30)
            assert cuts[name, level] == built.cut(own, level, target_tokens=30)
    restored = (shared.fine_inline_weight, shared.mid_sentence_weight)
    assert restored == (FINE_INLINE_WEIGHT, MID_SENTENCE_WEIGHT)  # each setting's weights were put back
    assert cuts["V0", "fine"] != cuts["V2", "fine"]  # the settings differ on this text: the check above has teeth
