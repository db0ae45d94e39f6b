"""Training and evaluation on the real embedded PostgreSQL and a real MLflow store."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest

from conftest import query
from mlops_cli import dataset, registry
from mlops_cli.features import clean_text, parse_param, prepare
from mlops_cli.runs import StepFailed, Trigger
from mlops_cli.sources import read_source
from mlops_cli.steps.load import load
from mlops_cli.steps.train import train

FAST = ("--param", "word_max_features=20000", "--param", "char_max_features=20000")
FAST_PARAMS = {"word_max_features": 20000, "char_max_features": 20000}


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 3), (2, 5), (3, 5), (4, 4)])
def test_char_wb_ngrams_are_scikit_learns(ngram_range):
    """The cached analyzer gives scikit-learn's char_wb n-grams (as a multiset), short words
    and odd whitespace included, and pickles without its cache."""
    import pickle

    from sklearn.feature_extraction.text import TfidfVectorizer

    from mlops_cli.features import CharWbNgrams

    docs = ["Console PS4 Slim 500 Go + manette", "a", "ab", "x  y\tz\n", "", "   ", "ÉLAN Ünïcode ルフィ 18cm",
            "Lot de 3 magazines anciens N° 69", "aaa aaa aaa"]
    ours = CharWbNgrams(*ngram_range)
    theirs = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range).build_analyzer()
    for _ in range(2):  # the second pass is served from the cache
        for doc in docs:
            assert sorted(ours(doc)) == sorted(theirs(doc)), doc
    assert ours._cache
    copy = pickle.loads(pickle.dumps(ours))
    assert copy._cache == {} and sorted(copy(docs[0])) == sorted(theirs(docs[0]))


def test_script_and_language_of_a_text():
    from mlops_cli.textstats import clean_row_features, language_of, row_features, script_of

    assert script_of("Console PS4 slim, très bon état") == "latin"
    assert script_of("Figurine ルフィ フィギュア 新品") == "cjk"
    assert script_of("Книга Толстой war") == "cyrillic"
    assert script_of("κλασικό βιβλίο") == "other"
    assert script_of("123 !!! 4,5") == "other" and script_of("") == "other"
    assert script_of("ab ルフィ") == "cjk"  # the larger count wins
    assert language_of(["the", "book", "and", "le"], "latin") == "en"
    assert language_of(["ルフィ"], "cjk") == "cjk" and language_of(["zzz"], "latin") == "other"
    f = row_features("Harry Potter <b>et</b> la chambre", "Roman pour les &eacute;l&egrave;ves", {"harry"})
    assert f == {"n_tokens": 9, "n_oov": 8, "script": "latin", "lang": "fr"}
    assert clean_row_features("harry potter et la chambre", "roman pour les élèves", {"harry"}) == f


def test_clean_text_handles_html_entities_mojibake_and_case():
    assert clean_text("<p>Lampe &eacute;tanche&nbsp;<br />LED</p>") == "lampe étanche led"
    assert clean_text("caf&amp;eacute; Ã©tÃ©") == "café été"
    assert clean_text(None) == "" and clean_text(float("nan")) == ""
    assert clean_text("Élève", fold_accents=True) == "eleve"
    # any UTF-8 read as cp1252, beside correct accents in the same text; "à" is "Ã" + a no-break space
    garbled = "Très idéal à offrir. Größe 10 € – «neuf» Élégant".encode("utf-8").decode("cp1252", errors="replace")
    assert clean_text(garbled + " déjà") == "très idéal à offrir. größe 10 € – «neuf» élégant déjà"
    # "<" not followed by a letter, / or ! is text, also once an entity is decoded; long tags go
    assert clean_text("Poids < 2 kg, enfants > 3 ans") == "poids < 2 kg, enfants > 3 ans"
    assert clean_text("Age &lt; 3 ans et &gt; 1 an") == "age < 3 ans et > 1 an"
    assert clean_text('<p style="' + "x" * 300 + '">Bonjour</p>') == "bonjour"
    # decomposed accents (e + U+0301) are the composed ones the model learned
    decomposed = unicodedata.normalize("NFD", "Télévision écran plat Poupée bébé")
    assert decomposed != "Télévision écran plat Poupée bébé"
    assert clean_text(decomposed) == "télévision écran plat poupée bébé"
    prepared = prepare([{"designation": "Tome 3", "description": None}])
    assert prepared.loc[0, "text"] == "tome 3"


def test_parse_param_types_and_errors():
    assert parse_param("alpha=5e-5") == ("alpha", 5e-5)
    assert parse_param("fold_accents=true") == ("fold_accents", True)
    assert parse_param("max_per_class=500") == ("max_per_class", 500)
    with pytest.raises(ValueError, match="unknown parameter"):
        parse_param("nope=1")
    with pytest.raises(ValueError, match="expected a int"):
        parse_param("word_min_df=abc")


def test_holdout_is_stable_as_the_catalogue_grows():
    ids = np.arange(1, 200_001, dtype=np.int64) * 7919
    small = dataset.holdout_mask(ids[:50_000], 0.2)
    large = dataset.holdout_mask(ids, 0.2)
    assert (small == large[:50_000]).all()
    assert 0.19 < large.mean() < 0.21


def test_validation_part_never_overlaps_the_holdout_and_is_stable_as_the_catalogue_grows():
    import pandas as pd

    from mlops_cli.selection import split_parts

    ids = np.arange(1, 100_001, dtype=np.int64) * 7919
    holdout = dataset.holdout_mask(ids, 0.2)
    val = dataset.validation_mask(ids, 0.25, 0.2)
    assert not (val & holdout).any()
    assert 0.24 < val.sum() / (~holdout).sum() < 0.26
    assert (dataset.validation_mask(ids[:30_000], 0.25, 0.2) == val[:30_000]).all()  # added rows move none
    # the parts: search and validation split the training rows, the fit rows are theirs (never the holdout)
    rows = pd.DataFrame({"productid": ids[:5000], "prdtypecode": np.resize([10, 40, 50, 2583], 5000),
                         "designation": "t", "description": ""})
    train_rows, hold = dataset.split(rows, 0.2)
    parts = split_parts(train_rows, validation_fraction=0.25, holdout_fraction=0.2, max_per_class=None, seed=1)
    assert set(parts.search.productid).isdisjoint(parts.validation.productid)
    assert set(parts.search.productid) | set(parts.validation.productid) == set(train_rows.productid)
    assert set(parts.fit_rows.productid).isdisjoint(hold.productid)
    capped = split_parts(train_rows, validation_fraction=0.25, holdout_fraction=0.2, max_per_class=300, seed=1)
    assert capped.fit_rows["prdtypecode"].value_counts().max() <= 300


def test_folds_are_stable_balanced_and_cross_validation_scores_out_of_fold():
    """k-fold by productid hash: each product keeps its fold as the catalogue grows; every fit row is
    scored once, by a model that never saw it; a class missing from a fold's fit is never predicted."""
    from mlops_cli.selection import Candidate, _decision_in, cv_search, fold_of

    ids = np.arange(1, 60_001, dtype=np.int64) * 7919
    folds = fold_of(ids, 3)
    assert (fold_of(ids[:10_000], 3) == folds[:10_000]).all()
    assert all(0.32 < (folds == f).mean() < 0.34 for f in range(3))
    # independent of the holdout: the same share of each fold is held out
    holdout = dataset.holdout_mask(ids, 0.2)
    assert all(0.19 < holdout[folds == f].mean() < 0.21 for f in range(3))

    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    y = np.resize([10, 40, 50], 600)
    X = sp.csr_matrix(np.eye(3)[np.searchsorted([10, 40, 50], y)] + rng.normal(0, 0.3, (600, 3)))
    params = {"classifier": "linearsvc", "C": 1.0, "class_weight": "none", "random_state": 0}
    good, noise = Candidate("good", params, ("a",)), Candidate("noise", params, ("b",))
    matrices = {"a": [X], "b": [sp.csr_matrix(rng.normal(0, 1, (600, 3)))]}
    result = cv_search([noise, good], matrices, y, fold_of(ids[:600], 3), metric="weighted_f1", max_seconds=60)
    assert result.chosen is good and result.folds == 3 and noise.status == "not chosen"
    assert result.validation_decision.shape == (600, 3) and (result.classes == [10, 40, 50]).all()
    assert good.rungs[-1]["rows"] == 600 and good.rungs[-1]["score"] > 0.9 > 0.5 > noise.rungs[-1]["score"]

    from sklearn.svm import LinearSVC

    two = LinearSVC().fit(X[y != 40], y[y != 40])  # 40 unseen: its column is below every other
    d = _decision_in(two, X[:5], np.array([10, 40, 50]))
    assert d.shape == (5, 3) and (d[:, 1] < d[:, [0, 2]].min(axis=1)).all()


def test_the_shared_word_count_gives_each_blocks_own_tfidf(small_catalogue):
    """The plain and the pipeline's word blocks from one counting pass are what each vectorizer
    fitted on its own gives (vocabulary, matrix), and each fitted vectorizer transforms new text
    exactly like the matrices the search used."""
    from mlops_cli.features import DEFAULT_PARAMS, prepare, word_branch
    from mlops_cli.selection import _counts_compatible, _fit_shared_words, plain_params

    rows = read_source(*small_catalogue).reset_index(drop=True)
    docs = [prepare(rows.iloc[:1500]), prepare(rows.iloc[1500:2000])]
    pb, wb = word_branch(plain_params(DEFAULT_PARAMS)), word_branch(DEFAULT_PARAMS)
    assert _counts_compatible(pb.steps[-1][1], wb.steps[-1][1])
    assert not _counts_compatible(pb.steps[-1][1], word_branch({**DEFAULT_PARAMS, "word_ngram_max": 3}).steps[-1][1])
    for (branch, X, (other,)), params in zip(_fit_shared_words(pb, wb, docs),
                                             (plain_params(DEFAULT_PARAMS), DEFAULT_PARAMS)):
        alone = word_branch(params)
        expected = alone.fit_transform(docs[0])
        assert branch.steps[-1][1].vocabulary_ == alone.steps[-1][1].vocabulary_
        assert X.shape == expected.shape and (X != expected).nnz == 0
        assert (branch.transform(docs[1]) != other).nnz == 0 and (alone.transform(docs[1]) != other).nnz == 0


def test_search_space_pins_and_budget():
    from mlops_cli.features import DEFAULT_PARAMS
    from mlops_cli.selection import PLAIN, candidates

    base = {**DEFAULT_PARAMS, "max_per_class": 4000}
    full = candidates(base, {}, 100)
    assert full[0].name == PLAIN and len({c.name for c in full}) == len(full) >= 6
    assert {c.params["classifier"] for c in full} == {"sgd", "linearsvc"}
    assert len(candidates(base, {}, 3)) == 3
    # a pinned setting is in every candidate and not searched; alpha pins SGD; plain only if compatible
    pinned = candidates({**base, "alpha": 3e-4}, {"alpha": 3e-4}, 100)
    assert {(c.params["classifier"], c.params["alpha"]) for c in pinned} == {("sgd", 3e-4)}
    assert PLAIN not in [c.name for c in pinned]
    weights = candidates({**base, "class_weight": "none"}, {"class_weight": "none"}, 100)
    assert {c.params["class_weight"] for c in weights} == {"none"} and weights[0].name == PLAIN
    assert PLAIN not in [c.name for c in candidates({**base, "word_max_features": 5}, {"word_max_features": 5}, 100)]
    # small data: character n-grams over title + description are candidates, pinned off they are not
    small = candidates(base, {}, 100, small=True)
    assert small[0].name == PLAIN and any("text_chars" in c.blocks for c in small)
    assert all(c.params["text_char_max_features"] for c in small if "text_chars" in c.blocks)
    assert not any("text_chars" in c.blocks for c in full)
    off = candidates({**base, "text_char_max_features": 0}, {"text_char_max_features": 0}, 100, small=True)
    assert not any("text_chars" in c.blocks for c in off) and len({c.name for c in off}) == len(off)


def test_train_registers_one_version_with_tags_metrics_and_artifacts(small_catalogue, cli, conn, settings, tmp_path):
    x, y = small_catalogue
    assert cli("load", "--x-path", x, "--y-path", y, "--as-of", "2026-03-02").exit_code == 0
    r = cli("train", "--json", *FAST, "--param", "class_weight=none")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == "succeeded"
    version, run_id = out["outputs"]["model_version"], out["outputs"]["mlflow_run_id"]
    # the search: pinned settings in every candidate (not searched), the rest varied, one chosen
    o = out["outputs"]
    search = o["search"]
    assert len(search) > 3 and [c["status"] for c in search].count("chosen") == 1
    assert {c["params"]["class_weight"] for c in search} == {"none"}
    assert len({tuple(sorted(c["params"].items())) for c in search}) == len(search)
    for c in search:
        assert 0 < c["validation_weighted_f1"] <= 1 and c["seconds"] >= 0 and c["rows"] > 0
    chosen = next(c for c in search if c["status"] == "chosen")
    assert chosen["name"] == o["chosen_name"]
    assert chosen["validation_score"] == max(c["validation_score"] for c in search)
    assert o["chosen"]["word_max_features"] == 20000 and o["chosen"]["class_weight"] == "none"
    assert 0 < o["baseline_weighted_f1"] < 1 and 0 <= o["ece"] < 1 and 0 <= o["brier"] < 2
    assert o["temperature"] > 0 and o["validation_rows"] > 0
    # MLflow: the chosen settings are the parent's params and tag; each candidate a nested run
    info = registry.run_info(settings, run_id)
    assert info["tags"]["chosen_candidate"] == o["chosen_name"]
    assert info["params"]["classifier"] == o["chosen"]["classifier"] and info["params"]["class_weight"] == "none"
    for metric in ("baseline_weighted_f1", "ece", "brier", "temperature", "search_seconds"):
        assert metric in info["metrics"], metric
    children = registry.child_runs(settings, run_id)
    assert sorted(c["name"] for c in children) == sorted(c["name"] for c in search)
    for child in children:
        assert child["params"]["class_weight"] == "none" and "seconds" in child["metrics"]
        assert "validation_weighted_f1" in child["metrics"] and child["status"] == "FINISHED"
    # the registered model: calibrated probabilities, predictions the classifier's own, fast path exact
    from mlops_cli.serving import LoadedModel

    model = registry.load_model(settings, version=version)
    products = read_source(x, y).head(50)[["designation", "description"]]
    proba = model.predict_proba(products)
    assert np.allclose(proba.sum(axis=1), 1) and (model.classes_[proba.argmax(axis=1)] == model.predict(products)).all()
    assert LoadedModel.prepare(version, model).fast is not None
    versions = registry.list_versions(settings)
    assert [v["version"] for v in versions] == [version]
    v = versions[0]
    assert v["aliases"] == ["challenger"] and v["tags"]["stage"] == "None"
    info = registry.run_info(settings, run_id)
    for metric in ("weighted_f1", "macro_f1", "accuracy", "train_rows", "test_rows", "train_seconds",
                   "f1_class_2583"):
        assert metric in info["metrics"], metric
    assert info["metrics"]["weighted_f1"] == pytest.approx(out["outputs"]["weighted_f1"])
    for tag in ("auto_trained", "trigger", "pipeline_run_id", "batch_ids", "dataset_hash", "code_version"):
        assert info["tags"][tag], tag
    assert info["tags"]["auto_trained"] == "true" and info["tags"]["trigger"] == "cli"
    assert info["tags"]["pipeline_run_id"] == str(out["pipeline_run_id"])
    c = registry.client(settings)
    artifacts = {a.path for a in c.list_artifacts(run_id)}
    assert {"classification_report.txt", "confusion_matrix.png", "label_distribution.json"} <= artifacts
    # the audit row's duration is the step's own measured duration (not its transaction's start):
    # the row's span covers the body, and exceeds it by no more than the two round trips around it
    recorded, measured = query(conn, "SELECT extract(epoch FROM finished_at - started_at)::float, "
                                     "(outputs->>'step_seconds')::float FROM pipeline_runs WHERE id = %s",
                               (out["pipeline_run_id"],))[0]
    assert measured > 0 and recorded > 0
    assert measured - 0.002 <= recorded <= measured + 0.5, (recorded, measured)
    # lineage in pipeline_runs: train consumed the load
    load_run, = query(conn, "SELECT id FROM pipeline_runs WHERE step = 'load'")[0]
    assert query(conn, "SELECT upstream_run_id FROM pipeline_runs WHERE id = %s",
                 (out["pipeline_run_id"],))[0][0] == load_run

    # no new load: skipped, exit 0, says why
    r = cli("train", *FAST)
    assert r.exit_code == 0
    assert "[skipped] train" in r.output and "no new load since the last training" in r.output
    assert len(registry.list_versions(settings)) == 1
    # a load whose every row is rejected (a broken file) is no new data either
    from test_load import valid_rows, write_pair

    rows = valid_rows(5)
    bx, by = write_pair(tmp_path / "broken", rows, y_override=[{**r, "prdtypecode": 11} for r in rows])
    r = cli("load", "--x-path", bx, "--y-path", by, "--as-of", "2026-03-09")
    assert r.exit_code == 0 and "0 rows loaded, 1 rejected" in r.output, r.output
    assert "every row rejected: nothing new to train on (notified)" in r.output
    broken_run = query(conn, "SELECT max(id) FROM pipeline_runs WHERE step = 'load'")[0][0]
    assert query(conn, "SELECT channel, subject, payload->'context'->'reasons' FROM notifications "
                       "WHERE event = 'load_rejected'") == [
        ("log", "[mlops] load batch #2 (2026-W11): all 1 rows rejected", {"unknown prdtypecode N": 1})]
    r = cli("train", *FAST)
    assert r.exit_code == 0 and "[skipped] train" in r.output, r.output
    assert (f"no row loaded (load run #{broken_run}: every row rejected, see `mlops runs --step load`) since the "
            "last training") in r.output
    assert len(registry.list_versions(settings)) == 1
    # --force trains anyway
    r = cli("train", "--force", "--json", *FAST)
    assert r.exit_code == 0 and len(registry.list_versions(settings)) == 2

    # evaluate: newest challenger not yet evaluated, and the same score twice on the same holdout
    r1 = cli("evaluate", "--json")
    assert r1.exit_code == 0, r1.output
    e1 = json.loads(r1.stdout)
    r2 = cli("evaluate", "--version", e1["outputs"]["model_version"], "--json")
    e2 = json.loads(r2.stdout)
    assert e1["outputs"]["weighted_f1"] == e2["outputs"]["weighted_f1"]
    assert e1["outputs"]["holdout_hash"] == e2["outputs"]["holdout_hash"]
    r3 = cli("evaluate")
    assert "[skipped] evaluate" in r3.output and "every trained version has been evaluated" in r3.output
    assert query(conn, "SELECT count(*) FROM model_evaluations WHERE purpose = 'evaluation'")[0][0] == 2
    # a version by the MLflow run that trained it: --mlflow-run-id, or --run-id (deprecated, warns)
    mlflow_run_id = e1["outputs"]["mlflow_run_id"]
    for option, warned in (("--mlflow-run-id", False), ("--run-id", True)):
        r = cli("evaluate", option, mlflow_run_id, "--json")
        assert r.exit_code == 0, r.output
        assert ("Warning: --run-id is deprecated: use --mlflow-run-id" in r.stderr) is warned, r.stderr
        e = json.loads(r.stdout)
        assert (e["outputs"]["model_version"], e["outputs"]["weighted_f1"]) == \
            (e1["outputs"]["model_version"], e1["outputs"]["weighted_f1"])
        assert query(conn, "SELECT params FROM pipeline_runs WHERE id = %s", (e["pipeline_run_id"],))[0][0] == \
            {"mlflow_run_id": mlflow_run_id, "version": None}
    assert query(conn, "SELECT count(*) FROM model_evaluations WHERE purpose = 'evaluation'")[0][0] == 4


def test_bad_datasets_fail_clearly_and_register_nothing(tmp_path, settings, conn, cli):
    from test_load import valid_rows, write_pair

    r = cli("train", "--force")
    assert r.exit_code == 1
    assert "No products to train on: the catalogue is empty. Run `mlops load` first." in r.output
    rows = valid_rows(40)
    for row in rows:
        row["prdtypecode"] = 2583
    x, y = write_pair(tmp_path / "one", rows)
    load(conn, settings.replace(initial_load_fraction=1.0), Trigger(), x_path=str(x), y_path=str(y))
    with pytest.raises(StepFailed) as info:
        train(conn, settings, Trigger(), params=FAST_PARAMS)
    assert "Only one class (2583) in the" in info.value.result.message
    assert registry.list_versions(settings) == []
    assert query(conn, "SELECT status FROM pipeline_runs WHERE step = 'train' ORDER BY id") == [("failed",), ("failed",)]


def test_evaluate_conflicting_options(cli):
    r = cli("evaluate", "--mlflow-run-id", "abc", "--version", "1")
    assert r.exit_code == 1 and "Give --mlflow-run-id or --version, not both" in r.output
    assert "deprecated" not in r.stderr
    # the deprecated spelling means the same, and says it is deprecated
    r = cli("evaluate", "--run-id", "abc", "--version", "1")
    assert r.exit_code == 1 and "Give --mlflow-run-id or --version, not both" in r.output
    assert "Warning: --run-id is deprecated: use --mlflow-run-id" in r.stderr
    r = cli("evaluate", "--run-id", "abc", "--mlflow-run-id", "def")
    assert r.exit_code == 2 and "Give --mlflow-run-id or its deprecated spelling --run-id, not both" in r.output
    help_text = cli("evaluate", "--help").output
    assert "--mlflow-run-id" in help_text and "--run-id" not in help_text.replace("--mlflow-run-id", "")


def test_transient_failure_is_retried_then_succeeds(small_catalogue, conn, settings, monkeypatch, tmp_path, cli):
    x, y = small_catalogue
    cli("load", "--x-path", x, "--y-path", y)
    monkeypatch.setenv("MLOPS_FAULT", "train:transient=2")
    monkeypatch.setenv("MLOPS_FAULT_COUNTER", str(tmp_path / "counter"))
    r = cli("train", *FAST)
    assert r.exit_code == 0, r.output
    statuses = [s for s, in query(conn, "SELECT status FROM pipeline_runs WHERE step = 'train' ORDER BY id")]
    assert statuses == ["failed", "failed", "succeeded"]
    assert len(registry.list_versions(settings)) == 1


def test_permanent_failure_exits_nonzero_with_the_error(small_catalogue, conn, monkeypatch, cli, settings):
    x, y = small_catalogue
    cli("load", "--x-path", x, "--y-path", y)
    monkeypatch.setenv("MLOPS_FAULT", "train:fail")
    r = cli("train", *FAST)
    assert r.exit_code == 1
    assert "Error: train failed (run #2): injected failure in train (MLOPS_FAULT)" in r.output
    assert registry.list_versions(settings) == []
