"""Property-based test (Hypothesis) of the corpus stage: it never crashes on any text, and every
input document is either kept (in exactly one split) or counted under one drop reason."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from glotta.config import CorpusConfig
from glotta.corpus import DROP_REASONS, run_corpus
from glotta.errors import GlottaError
from tests.corpus.real_text import swedish_answers

REAL = swedish_answers()[:50]
DOCUMENT = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=80),  # any script, controls, emoji, marks
    st.sampled_from(REAL),  # real text, repeated: exact and near duplicates
    st.builds(lambda a, b: a + " " + b, st.sampled_from(REAL), st.text(max_size=10)),
    st.sampled_from(["", " ", "\n\n", "<p>html</p>", "[[wiki]]", "a" * 300, "\x00\ufeff"]),
)


@given(
    documents=st.lists(DOCUMENT, max_size=25),
    settings=st.fixed_dictionaries(
        {
            "near_dedup": st.booleans(),
            "quality_filter": st.booleans(),
            "scrub_pii": st.booleans(),
            "languages": st.sampled_from([[], ["sv"]]),
            "min_chars": st.sampled_from([0, 20]),
            "max_chars": st.sampled_from([0, 200]),
        }
    ),
)
def test_every_document_is_kept_or_counted_as_dropped(tmp_path_factory, documents, settings):
    folder = tmp_path_factory.mktemp("clean")
    source = folder / "in.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents), "utf-8")
    cfg = CorpusConfig(
        inputs=[str(source)], valid_fraction=0.2, test_fraction=0.2, workers=1, **settings
    )
    try:
        stats = run_corpus(cfg, folder / "out")
    except GlottaError as exc:  # no training text: a clear error, no output that looks finished
        assert "is empty" in str(exc) or "none to train" in str(exc), exc
        assert not (folder / "out" / "stats.json").exists()
        assert not list((folder / "out").glob("*.jsonl"))
        return
    assert stats["documents_in"] == len(documents)
    assert set(stats["dropped"]) == set(DROP_REASONS)
    assert stats["documents_out"] + sum(stats["dropped"].values()) == len(documents), stats
    written = sum(
        len((folder / "out" / f"{split}.jsonl").read_text("utf-8").splitlines())
        for split in ("train", "valid", "test")
    )
    assert written == stats["documents_out"]
