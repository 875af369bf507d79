"""The id ``glotta serve`` gives a folder: the model card's name for the model, else the folder's
name (the served id itself is checked on real servers in test_completions and test_encoder)."""

from __future__ import annotations

from glotta.serve.models import model_id

CARD_WITH_INDEX = """---
license: mit
model-index:
- name: demo
  results: []
---

# demo
"""
# glotta's card of a run exported without evaluation results: no model-index in the front matter.
CARD_WITHOUT_INDEX = """---
license: mit
---

# demo-bert

This model was trained from scratch with [glotta](https://pypi.org/project/glotta/) from the recipe
`demo-bert`; every figure on this card was written by the pipeline itself.
"""


def test_model_id_comes_from_the_card_else_the_folder(tmp_path):
    cases = {
        "with-index": CARD_WITH_INDEX,
        "without-index": CARD_WITHOUT_INDEX,
        "foreign-card": "# Some model\n\nA card not written by glotta.\n",
        "broken-yaml": "---\nmodel-index: [\n---\n# x\n",
    }
    for folder, card in cases.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README.md").write_text(card, encoding="utf-8")
    (tmp_path / "no-card").mkdir()
    assert model_id(tmp_path / "with-index") == "demo"
    assert model_id(tmp_path / "without-index") == "demo-bert"
    assert model_id(tmp_path / "foreign-card") == "foreign-card"
    assert model_id(tmp_path / "broken-yaml") == "broken-yaml"
    assert model_id(tmp_path / "no-card") == "no-card"
