"""Conditional promotion, manual approval, rollback and their notifications, on the real stack:
embedded PostgreSQL, a real MLflow registry, a local aiosmtpd server and a local HTTP receiver
standing in for Slack. Nothing is mocked.

Scores are made deterministic by the models themselves: GOOD (a normal TF-IDF model, weighted F1
~0.77 on the 3,000-row catalogue) and WEAK (50 features and a huge alpha, ~0.14), with
MIN_F1_THRESHOLD chosen per test (0.05: both pass; 0.5: only GOOD passes).
"""

from __future__ import annotations

import json
import os
import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from conftest import query, wait_for
from mlops_cli import db, registry, store
from mlops_cli.errors import MlopsError, NotReady
from mlops_cli.models import decision_history, list_models
from mlops_cli.runs import StepFailed, Trigger
from mlops_cli.selection import PLAIN
from mlops_cli.steps.evaluate import evaluate
from mlops_cli.steps.load import load
from mlops_cli.steps.promote import approve, decide, promote, restoring_aliases
from mlops_cli.steps.rollback import rollback
from mlops_cli.steps.train import train
from test_notify import free_port, receiver, smtp_server  # noqa: F401  (fixtures, reused)

GOOD = {"word_max_features": 2000, "char_max_features": 2000, "alpha": 1e-3}
WEAK = {"word_max_features": 50, "char_max_features": 50, "alpha": 1.0}
GOOD_CLI = ("--param", "word_max_features=2000", "--param", "char_max_features=2000", "--param", "alpha=1e-3")
BOTH_PASS = 0.05
ONLY_GOOD = 0.5
T = Trigger(actor="pytest")


@pytest.fixture(autouse=True)
def champion_rule_only(monkeypatch):
    """These tests are about the champion rule with deliberately small models (GOOD, WEAK) that
    need not beat the plain baseline: its requirement is off here, on in the tests about it."""
    monkeypatch.setenv("PROMOTION_REQUIRE_BEAT_BASELINE", "false")


# --- helpers ------------------------------------------------------------------------------------
def load_all(conn, settings, catalogue, fraction: float = 1.0):
    x, y = catalogue
    r = load(conn, settings.replace(initial_load_fraction=fraction), T, x_path=str(x), y_path=str(y))
    assert r.status == "succeeded", r.message


def challenger(conn, settings, params: dict) -> str:
    """Train and evaluate a version (the promote gate); returns its version number."""
    r = train(conn, settings, T, force=True, params=params)
    assert r.status == "succeeded", r.message
    assert evaluate(conn, settings, T).status == "succeeded"
    return r.outputs["model_version"]


def champion_and_challenger(conn, settings, catalogue, second: dict) -> tuple[str, str]:
    """The whole catalogue loaded, v1 (WEAK) promoted, then v2 (`second`) trained and evaluated."""
    load_all(conn, settings, catalogue)
    v1 = challenger(conn, settings, WEAK)
    assert promote(conn, settings, T).outputs["decision"] == "promoted"
    return v1, challenger(conn, settings, second)


def alias_map(settings) -> dict:
    return {a: (v or {}).get("version") for a in registry.ALIASES
            for v in [registry.version_by_alias(settings, a)]}


def tags(settings, version) -> dict:
    return registry.get_version(settings, version)["tags"]


def decisions(conn) -> list[tuple]:
    return query(conn, "SELECT model_version, decision FROM model_decisions ORDER BY id")


def notification_rows(conn) -> list[tuple]:
    return query(conn, "SELECT event, channel, status FROM notifications ORDER BY id")


def row_justification(conn) -> str:
    return query(conn, "SELECT justification FROM model_decisions ORDER BY id DESC LIMIT 1")[0][0]


def cli_error(r) -> str:
    """The `Error: ...` line a failed command prints."""
    return [line for line in r.output.splitlines() if line.startswith("Error: ")][-1]


# --- the rule (pure) ------------------------------------------------------------------------------
@pytest.mark.parametrize("candidate, champion, auto, expected_decision, expected_text", [
    (0.8421, ("3", 0.8310), True, "promoted",
     "weighted_f1 0.8421 > threshold 0.75 and > champion v3 0.8310 (+0.0111): promoted"),
    (0.8421, (None, None), True, "promoted", "weighted_f1 0.8421 > threshold 0.75 and no champion yet: promoted"),
    (0.8200, ("3", 0.8310), True, "archived",
     "weighted_f1 0.8200 > threshold 0.75 but not > champion v3 0.8310 (-0.0110): archived (champion v3 kept)"),
    (0.8310, ("3", 0.8310), True, "archived",  # equal is not better
     "weighted_f1 0.8310 > threshold 0.75 but not > champion v3 0.8310 (+0.0000): archived (champion v3 kept)"),
    (0.7000, (None, None), True, "archived", "weighted_f1 0.7000 <= threshold 0.75: archived (no champion)"),
    (0.7500, ("3", 0.6), True, "archived", "weighted_f1 0.7500 <= threshold 0.75: archived (champion v3 kept)"),
    (0.8421, ("3", 0.8310), False, "needs_approval",
     "weighted_f1 0.8421 > threshold 0.75 and > champion v3 0.8310 (+0.0111): would be promoted, but "
     "auto-promotion is disabled (AUTO_PROMOTION_ENABLED=false): needs approval"),
])
def test_decision_rule_and_justification(candidate, champion, auto, expected_decision, expected_text):
    decision, rule, text = decide("weighted_f1", candidate, *champion, threshold=0.75, min_improvement=0.0,
                                  auto_promotion=auto)
    assert (decision, text) == (expected_decision, expected_text)
    assert "MIN_F1_THRESHOLD 0.75" in rule and f"AUTO_PROMOTION_ENABLED ({'yes' if auto else 'no'})" in rule


def test_min_improvement_is_required_on_top_of_the_champion():
    decision, rule, text = decide("macro_f1", 0.80, "2", 0.79, threshold=0.5, min_improvement=0.02,
                                  auto_promotion=True)
    assert decision == "archived"
    assert text == "macro_f1 0.8000 > threshold 0.5 but not > champion v2 0.7900 + 0.02 (+0.0100): " \
                   "archived (champion v2 kept)"
    assert rule.endswith("macro_f1 0.8000 > champion v2 0.7900 + MIN_IMPROVEMENT 0.02 (no)")
    assert decide("macro_f1", 0.82, "2", 0.79, threshold=0.5, min_improvement=0.02, auto_promotion=True)[0] == \
        "promoted"


def test_a_challenger_below_its_plain_baseline_is_refused_with_both_numbers():
    kw = dict(threshold=0.5, min_improvement=0.0, auto_promotion=True)
    decision, rule, text = decide("weighted_f1", 0.70, None, None, baseline=(0.70, 0.73), **kw)
    assert decision == "archived"
    assert text.startswith("refused: weighted_f1 0.7000 is below its plain baseline 0.7300 (-0.0300; "
                           "TF-IDF + LinearSVC fitted on the same rows, scored on the same holdout): the pipeline, "
                           "not the data, is wrong; ")
    assert text.endswith(": archived (no champion)")
    assert rule.endswith("weighted_f1 0.7000 >= plain baseline 0.7300 on the training holdout (no)")
    # a tie passes (when the search chose the plain configuration, the challenger is its baseline)
    decision, rule, text = decide("weighted_f1", 0.73, None, None, baseline=(0.73, 0.73), **kw)
    assert decision == "promoted" and rule.endswith("0.7300 on the training holdout (yes)")
    assert text.startswith("level with its plain baseline (not below it, so allowed): weighted_f1 0.7300 vs plain "
                           "baseline 0.7300 (+0.0000 on its training holdout); ")
    # just below: refused; with auto-promotion off it still needs approval, as "would be archived"
    assert decide("weighted_f1", 0.7299, None, None, baseline=(0.7299, 0.73), **kw)[0] == "archived"
    off = decide("weighted_f1", 0.70, None, None, baseline=(0.70, 0.73), **{**kw, "auto_promotion": False})
    assert off[0] == "needs_approval" and "would be archived" in off[2]
    # beaten: promoted, and the justification shows the baseline too
    decision, _rule, text = decide("weighted_f1", 0.80, None, None, baseline=(0.80, 0.73), **kw)
    assert decision == "promoted" and text.startswith(
        "beats its plain baseline: weighted_f1 0.8000 vs plain baseline 0.7300 (+0.0700 on its training holdout); ")
    # PROMOTION_REQUIRE_BEAT_BASELINE=false: shown, not required
    decision, rule, text = decide("weighted_f1", 0.70, None, None, baseline=(0.70, 0.73), require_baseline=False, **kw)
    assert decision == "promoted" and "not required (PROMOTION_REQUIRE_BEAT_BASELINE=false)" in text
    assert rule.endswith("(not required: PROMOTION_REQUIRE_BEAT_BASELINE=false, no)")


def test_a_broken_feature_setting_loses_to_the_baseline_and_is_refused(small_catalogue, cli, conn, settings,
                                                                       monkeypatch):
    """Five words, five title and five text n-grams: the search keeps them (pinned), cannot help,
    and the plain baseline trained beside it on the same rows wins; promotion refuses it for that."""
    monkeypatch.setenv("PROMOTION_REQUIRE_BEAT_BASELINE", "true")
    monkeypatch.setenv("MIN_F1_THRESHOLD", str(BOTH_PASS))  # the champion rule alone would promote it
    monkeypatch.setenv("TRAIN_SEARCH_MAX_CANDIDATES", "4")
    load_all(conn, settings, small_catalogue)
    r = cli("train", "--json", "--param", "word_max_features=5", "--param", "char_max_features=5",
            "--param", "text_char_max_features=5")
    assert r.exit_code == 0, r.output
    o = json.loads(r.stdout.strip().splitlines()[-1])["outputs"]
    assert PLAIN not in [c["name"] for c in o["search"]]  # a pin contradicts the plain model
    assert o["chosen"]["word_max_features"] == 5 and o["chosen"]["char_max_features"] == 5
    assert o["weighted_f1"] < o["baseline_weighted_f1"]
    assert cli("evaluate").exit_code == 0
    r = cli("promote", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["outputs"]
    assert d["decision"] == "archived" and d["baseline_score"] == pytest.approx(o["baseline_weighted_f1"], abs=1e-5)
    assert d["candidate_score"] > BOTH_PASS and d["champion_version"] is None
    assert d["justification"].startswith(
        f"refused: weighted_f1 {o['weighted_f1']:.4f} is below its plain baseline "
        f"{o['baseline_weighted_f1']:.4f} ({o['weighted_f1'] - o['baseline_weighted_f1']:+.4f}; ")
    assert "the pipeline, not the data, is wrong" in row_justification(conn)
    assert alias_map(settings)["champion"] is None
    # mlops models shows the baseline beside the score
    [model] = json.loads(cli("models", "--json").stdout)
    assert model["baseline_weighted_f1"] == pytest.approx(o["baseline_weighted_f1"], abs=1e-5)
    assert model["chosen"] == o["chosen_name"]
    r = cli("models")
    assert "baseline F1" in r.stdout and f"{o['baseline_weighted_f1']:.4f}" in r.stdout


# --- promotion --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_first_model_promoted_with_email_slack_audit_and_models_table(
        small_catalogue, cli, conn, settings, smtp_server, receiver, monkeypatch):  # noqa: F811
    port, handler = smtp_server
    monkeypatch.setenv("INITIAL_LOAD_FRACTION", "1.0")
    monkeypatch.setenv("MIN_F1_THRESHOLD", str(ONLY_GOOD))
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("SMTP_SECURITY", "plain")
    monkeypatch.setenv("NOTIFICATION_EMAIL", "ml-team@example.org")
    monkeypatch.setenv("NOTIFICATION_SLACK_WEBHOOK", receiver.url("/services/T0/B0/hook"))
    x, y = small_catalogue

    # gate: nothing evaluated yet -> skipped, exit 0
    r = cli("promote")
    assert r.exit_code == 0 and "[skipped] promote" in r.output and "nothing left to decide" in r.output

    assert cli("load", "--x-path", x, "--y-path", y).exit_code == 0
    assert cli("train", *GOOD_CLI).exit_code == 0
    assert cli("evaluate").exit_code == 0
    r = cli("promote", "--by", "carol")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "[ok] promote (run #" in out and "version 1 promoted" in out
    assert re.search(r"candidate +v1 +weighted_f1 0\.\d{4} +\(its evaluation on \d+ holdout rows\)", out), out
    assert re.search(r"champion +none", out) and "threshold      0.5" in out
    assert "AUTO_PROMOTION_ENABLED (yes)" in out and "no champion to beat (yes)" in out
    assert "and no champion yet: promoted" in out
    assert "aliases now    champion=v1" in out
    assert "notifications  log sent, email sent, slack sent" in out

    # MLflow: champion alias, challenger consumed, stage/decision tags, description, run tags
    assert alias_map(settings) == {"champion": "1", "challenger": None, "previous-champion": None}
    v1 = registry.get_version(settings, "1")
    assert v1["tags"]["stage"] == "Production" and v1["tags"]["decision"] == "promoted"
    assert v1["tags"]["decided_by"] == "carol" and v1["tags"]["decided_at"]
    assert v1["tags"]["reason"] == v1["description"] == row_justification(conn)
    assert v1["description"].endswith("and no champion yet: promoted")
    run_tags = registry.run_info(settings, v1["mlflow_run_id"])["tags"]
    assert run_tags["decision"] == "promoted" and run_tags["champion_version"] == "none"
    assert float(run_tags["candidate_weighted_f1"]) > ONLY_GOOD

    # audit: one decision row, the pipeline run consumed the evaluate run, 3 notifications sent
    [row] = store.list_decisions(conn, settings.model_name)
    assert row["decision"] == "promoted" and row["model_version"] == "1" and row["decided_by"] == "carol"
    assert row["threshold"] == ONLY_GOOD and row["champion_version"] is None and row["metric"] == "weighted_f1"
    assert row["triggered_by"] == "cli" and row["mlflow_run_id"] == v1["mlflow_run_id"]
    promote_run = store.get_run(conn, row["pipeline_run_id"])
    assert promote_run["status"] == "succeeded" and promote_run["actor"] == "carol"
    assert store.get_run(conn, promote_run["upstream_run_id"])["step"] == "evaluate"
    assert notification_rows(conn) == [("promotion", "log", "sent"), ("promotion", "email", "sent"),
                                       ("promotion", "slack", "sent")]

    # the email and the Slack message carry the decision, the score and the justification
    [envelope] = handler.envelopes
    mail = message_from_bytes(envelope.original_content, policy=policy.default)
    assert mail["Subject"] == f"Model {settings.model_name} v1 promoted to production"
    assert envelope.rcpt_tos == ["ml-team@example.org"]
    body = mail.get_content()
    score = f"{row['candidate_score']:.4f}"
    for text in ("Decision:   promoted", f"Candidate:  version 1, weighted_f1 = {score}",
                 "Champion:   version n/a", "and no champion yet: promoted", "decided_by: carol"):
        assert text in body, (text, body)
    [slack] = receiver.bodies("/services/T0/B0/hook")
    slack_text = json.dumps(slack)
    assert "v1 promoted to production" in slack["text"]
    assert score in slack_text and "no champion yet: promoted" in slack_text

    # promote again on the same challenger: nothing left to decide, still one decision
    r = cli("promote", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "skipped"
    assert decisions(conn) == [("1", "promoted")]
    assert len(handler.envelopes) == 1

    # mlops models: the champion is marked
    r = cli("models")
    assert r.exit_code == 0, r.output
    line = next(l for l in r.stdout.splitlines() if re.match(r"^\*\s+1\s", l))
    assert "champion" in line and "Production" in line and "promoted" in line and score in line
    assert "* champion (in production)" in r.stdout
    [model] = json.loads(cli("models", "--json").stdout)
    assert model["is_champion"] is True and model["decision"] == "promoted" and model["weighted_f1"] > 0.5
    r = cli("models", "--history")
    assert r.exit_code == 0 and "promoted" in r.stdout and "carol" in r.stdout


@pytest.mark.slow
def test_better_model_promoted_old_archived_then_worse_archived(small_catalogue, conn, settings):
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)
    assert promote(conn, s, T).outputs["decision"] == "promoted"

    v2 = challenger(conn, s, GOOD)
    r = promote(conn, s, Trigger(actor="dave"))
    o = r.outputs
    assert (o["decision"], o["model_version"], o["champion_version"]) == ("promoted", v2, v1)
    assert o["candidate_score"] > o["champion_score"]
    assert r.message == f"version {v2}: {o['justification']}"
    assert o["justification"].endswith(f"; weighted_f1 {o['candidate_score']:.4f} > threshold 0.05 and > champion "
                                       f"v1 {o['champion_score']:.4f} "
                                       f"(+{o['candidate_score'] - o['champion_score']:.4f}): promoted")
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    assert tags(s, v1)["stage"] == "Archived" and tags(s, v1)["replaced_by"] == v2
    assert tags(s, v2)["stage"] == "Production" and tags(s, v2)["decision"] == "promoted"
    # both scored on identical holdout rows: the champion was re-checked in this very step
    recheck = query(conn, """SELECT model_version, holdout_hash, weighted_f1 FROM model_evaluations
                             WHERE purpose = 'champion-recheck' AND pipeline_run_id = %s""", (r.pipeline_run_id,))
    assert [(v, round(f, 6)) for v, _h, f in recheck] == [(v1, round(o["champion_score"], 6))]
    assert recheck[0][1] == o["holdout_hash"] == store.latest_evaluation(conn, s.model_name, v2)["holdout_hash"]
    row = store.latest_decision_for_version(conn, s.model_name, v2)
    assert row["previous_champion"] == v1 and row["champion_score"] == pytest.approx(o["champion_score"])

    # a worse challenger, decided on explicitly by its MLflow run id: archived, champion untouched
    v3 = challenger(conn, s, WEAK)
    mlflow_run_id = registry.get_version(s, v3)["mlflow_run_id"]
    r = promote(conn, s, T, mlflow_run_id=mlflow_run_id)
    o = r.outputs
    assert o["decision"] == "archived" and o["model_version"] == v3
    assert o["justification"].endswith(f"(champion v{v2} kept)") and " but not > champion v2 " in o["justification"]
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    assert tags(s, v3)["stage"] == "Archived" and tags(s, v3)["decision"] == "archived"
    assert registry.get_version(s, v3)["description"] == o["justification"]
    # ...and the explicit decision consumed the evaluate run: the default has nothing left to decide
    assert promote(conn, s, T).status == "skipped"
    assert decisions(conn) == [(v1, "promoted"), (v2, "promoted"), (v3, "archived")]

    models = list_models(conn, s)
    assert [m["version"] for m in models] == [v3, v2, v1]
    assert [m["is_champion"] for m in models] == [False, True, False]
    assert [m["stage"] for m in models] == ["Archived", "Production", "Archived"]
    assert models[0]["reason"] == o["justification"] and models[1]["aliases"] == ["champion"]
    assert [d["decision"] for d in decision_history(conn, s, 2)] == ["archived", "promoted"]


def test_evaluating_the_champion_by_hand_does_not_hide_the_waiting_challenger(small_catalogue, conn, settings):
    """`mlops evaluate --version <champion>` (a person re-checks production) after the challenger's
    evaluation: the next promote still decides on the challenger. Before, it took the newest
    evaluation, the champion's, skipped it as already the champion, and the challenger was never
    decided on."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, GOOD)
    assert evaluate(conn, s, T, version=v1).outputs["model_version"] == v1
    r = promote(conn, s, T)
    assert (r.status, r.outputs["model_version"], r.outputs["decision"]) == ("succeeded", v2, "promoted")
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    assert promote(conn, s, T).status == "skipped"  # decided once
    assert decisions(conn) == [(v1, "promoted"), (v2, "promoted")]


def test_a_promotion_that_died_after_moving_the_registry_is_recorded_by_the_next_run(
        small_catalogue, conn, settings, monkeypatch):
    """The registry is not transactional: a promote step that dies between moving the aliases and
    committing its model_decisions row (kill -9, a lost connection) leaves a champion with no
    decision and no notification. The next promote finds it (the version's tags say promoted, no
    row does), decides again against the champion it replaced, and records and notifies it."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, GOOD)
    monkeypatch.setenv("MLOPS_FAULT", "promote.registry_moved:fail")
    with pytest.raises(StepFailed):
        promote(conn, s, Trigger(actor="dave"))
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}  # moved
    assert decisions(conn) == [(v1, "promoted")]  # ...but not recorded
    promotions = "SELECT count(*) FROM notifications WHERE event = 'promotion'"
    sent = query(conn, promotions)[0][0]
    monkeypatch.delenv("MLOPS_FAULT")
    r = promote(conn, s, Trigger(actor="dave"))
    o = r.outputs
    assert r.status == "succeeded" and o["resumed"] is True
    assert (o["decision"], o["model_version"], o["champion_version"]) == ("promoted", v2, v1)
    assert o["justification"].startswith("recorded after the promote step that moved the registry at ")
    assert decisions(conn) == [(v1, "promoted"), (v2, "promoted")]
    assert store.latest_decision_for_version(conn, s.model_name, v2)["previous_champion"] == v1
    assert query(conn, promotions)[0][0] > sent
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    # recorded once: the next run has nothing to decide
    again = promote(conn, s, T)
    assert again.status == "skipped" and decisions(conn) == [(v1, "promoted"), (v2, "promoted")]


def test_an_unrecorded_promotion_that_now_awaits_live_evidence_is_left_to_a_person(
        small_catalogue, conn, settings, monkeypatch):
    """A promote died after moving the registry; since, promotion requires live evidence
    (SHADOW_MIN_REQUESTS) that the version, already serving as champion, cannot gather as a
    challenger. The next promote fails naming the two ways out, as for any other rule that no
    longer promotes it. Before, it skipped with "stays the challenger", every run after it alike,
    and the promotion was never recorded."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, GOOD)
    monkeypatch.setenv("MLOPS_FAULT", "promote.registry_moved:fail")
    with pytest.raises(StepFailed):
        promote(conn, s, Trigger(actor="dave"))
    monkeypatch.delenv("MLOPS_FAULT")
    with pytest.raises(StepFailed) as info:
        promote(conn, s.replace(shadow_min_requests=500), Trigger(actor="dave"))
    message = info.value.result.message
    assert message.startswith(f"version {v2} is the champion, but its promotion was never recorded ("), message
    assert "and the rule now says awaiting_evidence: awaiting live evidence: 0 of 500 shadow requests" in message
    assert message.endswith(f"`mlops approve {v2} --reason ... --by NAME`, or put the champion back with "
                            f"`mlops rollback --to-version {v1} --reason ... --by NAME`")
    assert decisions(conn) == [(v1, "promoted")] and alias_map(s)["champion"] == v2


def test_a_promotion_killed_once_the_champion_alias_moved_is_recorded_by_the_next_run(
        small_catalogue, conn, settings):
    """kill -9 right after the champion alias moved, before previous-champion and before anything
    is recorded. The version's tags, written before the alias, say it was promoted and which
    champion it replaced, so the next promote records the decision against that champion. Before,
    the tags came after the aliases: the next promote found a champion with no decision tag,
    skipped it as already the champion and used up its evaluation: never recorded."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, GOOD)
    killed(conn, ("promote", "--by", "dave"), "promote.champion_moved", lambda: alias_map(s)["champion"] == v2,
           "the champion alias to move", env={"MIN_F1_THRESHOLD": str(BOTH_PASS)})
    assert alias_map(s) == {"champion": v2, "challenger": v2, "previous-champion": None}
    assert decisions(conn) == [(v1, "promoted")]
    r = promote(conn, s, Trigger(actor="dave"))
    o = r.outputs
    assert (r.status, o["resumed"], o["decision"], o["champion_version"]) == ("succeeded", True, "promoted", v1)
    assert o["justification"].startswith("recorded after the promote step that moved the registry at ")
    assert decisions(conn) == [(v1, "promoted"), (v2, "promoted")]
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    assert tags(s, v1)["stage"] == "Archived" and tags(s, v2)["replaces"] == v1


def test_a_train_does_not_move_the_challenger_while_a_decision_holds_the_champion_lock(
        small_catalogue, conn, settings):
    """Promote, approve and rollback read the challenger alias and then move or delete it under
    the champion lock. A train step that registers its version meanwhile waits for that lock
    before it sets the challenger: before, it set it at once, and the decision in progress then
    deleted it (its challenger was the version it decided on) or put the old one back."""
    from test_drift import _in_thread, _waiting_on_a_lock

    from mlops_cli.runs import lock_key
    from mlops_cli.steps.promote import CHAMPION_LOCK

    s = settings.replace(min_f1_threshold=BOTH_PASS)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)
    decider = db.connect(s)  # a decision in progress: it holds the champion lock
    store.champion_lock(decider, lock_key(CHAMPION_LOCK))
    try:
        trainer = db.connect(s)
        thread, out = _in_thread(lambda: train(trainer, s, T, force=True, params=GOOD))
        wait_for(lambda: _waiting_on_a_lock(conn) == 1 or not thread.is_alive(), "the train step to wait for the lock")
        assert thread.is_alive(), out
        versions = [v["version"] for v in registry.list_versions(s)]
        assert len(versions) == 2 and alias_map(s)["challenger"] == v1  # registered, not the challenger yet
    finally:
        decider.rollback()
        decider.close()
    thread.join(300)
    trainer.close()
    assert out["result"].status == "succeeded", out
    assert alias_map(s)["challenger"] == out["result"].outputs["model_version"] != v1


def killed_train(conn, fault: str, until, what: str, meanwhile=None):
    """`mlops train` (GOOD) hung at the fault site `fault`, SIGKILLed once `until()` holds (after
    `meanwhile(value)`), its database session gone: (until's value, the train's pipeline run id)."""
    return killed(conn, ("train", "--force", *GOOD_CLI), fault, until, what, meanwhile)


def killed(conn, args: tuple, fault: str, until, what: str, meanwhile=None, env: dict | None = None):
    """`mlops *args` hung at the fault site `fault`, SIGKILLed once `until()` holds (after
    `meanwhile(value)`), its database session gone: (until's value, its pipeline run id)."""
    import signal

    from test_load import _mlops

    p = _mlops(*args, env={**os.environ, **(env or {}), "MLOPS_FAULT": f"{fault}:hang"})
    try:
        value = wait_for(until, what, interval=0.5)
        if meanwhile is not None:
            meanwhile(value)
        [(run_id, backend)] = query(conn, "SELECT id, backend_pid FROM pipeline_runs WHERE status = 'running'")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    wait_for(lambda: not query(conn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)),
             "the killed run's database session to end")
    return value, run_id


def test_a_train_step_that_fails_after_registering_leaves_the_challenger_where_it_was(
        small_catalogue, conn, settings, monkeypatch):
    """The registry is not transactional: a train step that fails once its version is registered
    and holds the challenger alias deletes that version and gives the alias back."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)
    monkeypatch.setenv("MLOPS_FAULT", "train.registered:fail")
    with pytest.raises(StepFailed, match="injected failure in train.registered"):
        train(conn, s, T, force=True, params=GOOD)
    assert [v["version"] for v in registry.list_versions(s)] == [v1]
    assert alias_map(s)["challenger"] == v1
    assert query(conn, "SELECT model_version FROM model_evaluations") == [(v1,), (v1,)]  # train's, evaluate's


def test_a_version_left_by_a_killed_train_step_is_deleted_and_the_challenger_given_back(
        small_catalogue, conn, settings):
    """kill -9 between registering a version (now the challenger) and committing the step leaves
    a version the database never recorded: the shadow would score it. The daily alert step (and
    the next train step) delete it and give the challenger alias back; not while a train runs."""
    from mlops_cli import orphan_versions
    from mlops_cli.steps.alert import alert

    s = settings.replace(min_f1_threshold=BOTH_PASS)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)

    def not_while_it_runs(orphan):
        assert orphan_versions.sweep(conn, s) == {"checked": False,
                                                  "error": "a train step is running: it sweeps at its start"}
        assert alias_map(s)["challenger"] == orphan

    orphan, run_id = killed_train(
        conn, "train.registered",
        lambda: (registry.version_by_alias(s, registry.CHALLENGER) or {}).get("tags", {}).get("decision") == "pending"
        and alias_map(s)["challenger"] != v1 and alias_map(s)["challenger"],
        "the train step to register its version", meanwhile=not_while_it_runs)
    out = alert(conn, s, T).outputs["orphan_versions"]
    assert out == {"checked": True, "challenger": v1, "runs_ended": [],  # its MLflow run had ended
                   "removed": [{"version": orphan, "pipeline_run_id": run_id, "challenger": True}]}
    assert [v["version"] for v in registry.list_versions(s)] == [v1]
    assert alias_map(s) == {"champion": None, "challenger": v1, "previous-champion": None}
    [(status, error)] = query(conn, "SELECT status, error FROM pipeline_runs WHERE id = %s", (run_id,))
    assert status == "failed" and error.startswith("abandoned:")
    again = alert(conn, s, T).outputs["orphan_versions"]
    assert again == {"checked": True, "removed": [], "challenger": None, "runs_ended": []}


def test_an_mlflow_run_left_running_by_a_killed_train_step_is_ended_as_killed(small_catalogue, conn, settings):
    """kill -9 while train logs its MLflow run (before any version) leaves the run RUNNING for
    ever in MLflow: the next train step ends it as KILLED, and trains as usual."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    load_all(conn, s, small_catalogue)
    [mlflow_run], run_id = killed_train(
        conn, "train.logging", lambda: [r for r in registry.unfinished_runs(s) if "pipeline_run_id" in r["tags"]],
        "the train step to open its MLflow run")
    assert registry.list_versions(s) == []
    r = train(conn, s, T, force=True, params=WEAK)
    assert r.status == "succeeded", r.message
    swept = r.outputs["orphan_versions"]
    [ended] = swept.pop("runs_ended")
    assert swept == {"checked": True, "removed": [], "challenger": None}
    # killed once its run was open: maybe while it logged the candidates' nested runs, ended too
    children = registry.child_runs(s, mlflow_run["mlflow_run_id"])
    assert ended.pop("nested_runs") == sum(c["status"] == "KILLED" for c in children)
    assert {c["status"] for c in children} <= {"FINISHED", "KILLED"}
    assert ended == {"mlflow_run_id": mlflow_run["mlflow_run_id"], "pipeline_run_id": run_id}
    assert registry.run_info(s, mlflow_run["mlflow_run_id"])["status"] == "KILLED"
    assert registry.unfinished_runs(s) == []
    assert [v["version"] for v in registry.list_versions(s)] == [r.outputs["model_version"]]


def test_a_champion_moved_outside_mlops_is_reported_by_the_daily_alert_step(small_catalogue, conn, settings):
    """The API serves whatever the champion alias names; whoever can write to the MLflow
    registry can move it with no decision recorded. The alert step (daily) compares the alias
    with the last recorded change of production and notifies once per mismatch."""
    from mlops_cli.steps.alert import alert

    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, GOOD)
    audit = alert(conn, s, T).outputs["champion_audit"]  # no drift report: skipped, audited all the same
    assert audit == {"checked": True, "champion": v1, "recorded": v1, "ok": True, "notified": []}
    registry.set_alias(s, registry.CHAMPION, v2)  # straight through the registry: no row
    audit = alert(conn, s, T).outputs["champion_audit"]
    assert (audit["ok"], audit["champion"], audit["recorded"], audit["notified"]) == (False, v2, v1, ["log"])
    [(subject, payload)] = query(conn, "SELECT subject, payload FROM notifications WHERE event = 'champion_unrecorded'")
    assert subject == (f"[mlops] {s.model_name}: the champion alias names v{v2}, but the last recorded change of "
                       f"production put v{v1} there")
    assert f"mlops rollback --to-version {v1} --reason ... --by NAME" in payload["context"]["commands"]
    assert alert(conn, s, T).outputs["champion_audit"]["notified"] == "already"  # once per mismatch
    # put back through mlops (recorded): the audit is quiet again
    rollback(conn, s, T, reason="v2 was set by hand in MLflow", to_version=v1)
    assert alert(conn, s, T).outputs["champion_audit"]["ok"] is True


def test_an_unrecorded_champion_is_kept_recorded_by_approve_after_an_approve_that_died(
        small_catalogue, conn, settings, monkeypatch):
    """An approve step that dies once the registry has moved leaves a champion no row records; the
    daily audit names `mlops approve N` as the way to keep it, and that records it (against the
    version the last recorded change put in production). A recorded champion is refused."""
    from mlops_cli.steps.alert import alert

    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, WEAK)
    monkeypatch.setenv("MLOPS_FAULT", "promote.registry_moved:fail")
    with pytest.raises(StepFailed):
        approve(conn, s, Trigger(actor="erin"), v2, reason="the feed changed")
    monkeypatch.delenv("MLOPS_FAULT")
    assert alias_map(s)["champion"] == v2 and decisions(conn) == [(v1, "promoted")]
    assert alert(conn, s, T).outputs["champion_audit"]["ok"] is False
    r = approve(conn, s, Trigger(actor="erin"), v2, reason="the feed changed")
    assert r.status == "succeeded" and r.outputs["unrecorded_champion"] is True
    assert decisions(conn) == [(v1, "promoted"), (v2, "manual_promotion")]
    row = store.latest_decision_for_version(conn, s.model_name, v2)
    assert (row["champion_version"], row["previous_champion"], row["decided_by"]) == (v1, v1, "erin")
    assert row["justification"].endswith("; the champion alias already named it with no decision recorded: "
                                         "recorded now")
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    assert alert(conn, s, T).outputs["champion_audit"]["ok"] is True
    with pytest.raises(StepFailed, match=f"Version {v2} is already the champion; nothing to approve"):
        approve(conn, s, Trigger(actor="erin"), v2, reason="again")


def test_under_threshold_archived_even_without_champion_and_decided_once(small_catalogue, conn, settings):
    s = settings.replace(min_f1_threshold=ONLY_GOOD)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)
    r = promote(conn, s, T)
    o = r.outputs
    assert o["decision"] == "archived" and o["champion_version"] is None
    assert o["justification"].endswith(f"; weighted_f1 {o['candidate_score']:.4f} <= threshold 0.5: archived "
                                       "(no champion)")
    assert alias_map(s) == {"champion": None, "challenger": None, "previous-champion": None}
    assert tags(s, v1)["stage"] == "Archived"

    again = promote(conn, s, T)
    assert again.status == "skipped" and again.message.startswith("nothing left to decide")
    assert decisions(conn) == [(v1, "archived")]
    assert query(conn, "SELECT count(*) FROM notifications WHERE event = 'promotion'")[0][0] == 1  # log only

    # an explicit target needs a succeeded evaluation; rollback needs a champion
    with pytest.raises(StepFailed) as info:
        promote(conn, s, T, version="7")
    assert info.value.result.message == f"Model {s.model_name} has no version 7"
    with pytest.raises(StepFailed) as info:
        rollback(conn, s, T, reason="bad answers")
    assert info.value.result.message == "No champion to roll back: no version is in production"
    with pytest.raises(MlopsError, match="Give --mlflow-run-id or --version, not both"):
        promote(conn, s, T, mlflow_run_id="abc", version="1")


def test_promote_takes_mlflow_run_id_and_its_deprecated_spelling(cli, conn):
    for option, warned in (("--mlflow-run-id", False), ("--run-id", True)):
        r = cli("promote", option, "abc", "--version", "1")
        assert r.exit_code == 1 and cli_error(r) == "Error: Give --mlflow-run-id or --version, not both"
        assert ("Warning: --run-id is deprecated: use --mlflow-run-id" in r.stderr) is warned, r.stderr
    r = cli("promote", "--run-id", "nope")  # reaches the registry: the same lookup as --mlflow-run-id
    assert r.exit_code == 1 and "comes from MLflow run nope" in cli_error(r), r.output
    assert query(conn, "SELECT params FROM pipeline_runs WHERE step = 'promote'") == \
        [({"mlflow_run_id": "nope", "version": None},)]


@pytest.mark.slow
def test_auto_promotion_disabled_needs_approval_then_approve(small_catalogue, cli, conn, settings,
                                                            monkeypatch):
    x, y = small_catalogue
    s = settings.replace(auto_promotion_enabled=False, min_f1_threshold=ONLY_GOOD)
    load_all(conn, s, small_catalogue, fraction=0.9)
    v1 = train(conn, s, T, force=True, params=GOOD).outputs["model_version"]
    with pytest.raises(StepFailed) as info:  # trained but never evaluated: the gate is closed
        promote(conn, s, T, version=v1)
    assert isinstance(info.value.cause, NotReady)
    assert info.value.result.message.startswith(f"Version {v1} has no succeeded evaluation")
    assert evaluate(conn, s, T).status == "succeeded"
    # the catalogue grows after the evaluation: the holdout changes and the candidate is re-scored
    r = load(conn, s.replace(load_fraction=0.1), T, x_path=str(x), y_path=str(y), force=True)
    assert r.status == "succeeded" and r.outputs["rows_loaded"] > 0

    r = promote(conn, s, T)
    o = r.outputs
    assert o["decision"] == "needs_approval" and o["candidate_rescored"] is True
    assert o["justification"].endswith("would be promoted, but auto-promotion is disabled "
                                       "(AUTO_PROMOTION_ENABLED=false): needs approval")
    assert alias_map(s) == {"champion": None, "challenger": v1, "previous-champion": None}
    assert tags(s, v1)["stage"] == "None" and tags(s, v1)["decision"] == "needs_approval"
    rescored = query(conn, "SELECT holdout_hash FROM model_evaluations WHERE pipeline_run_id = %s "
                           "AND purpose = 'evaluation'", (r.pipeline_run_id,))
    assert rescored == [(o["holdout_hash"],)]
    assert query(conn, "SELECT subject FROM notifications")[0][0] == f"Model {s.model_name} v{v1} needs approval"

    # a human approves it (through the CLI, where the reason and the approver are required)
    r = cli("approve", v1, "--by", "alice")
    assert r.exit_code == 2 and "Missing option '--reason'" in r.output
    r = cli("approve", v1, "--reason", "  ", "--by", "alice")
    assert r.exit_code == 1 and cli_error(r) == 'Error: A reason is required to approve a version: pass --reason "..."'
    r = cli("approve", v1, "--reason", "checked the confusion matrix", "--by", "alice")
    assert r.exit_code == 0, r.output
    assert "[ok] approve (run #" in r.stdout and f"version {v1} manual_promotion" in r.stdout
    assert f"aliases now    champion=v{v1}" in r.stdout
    assert alias_map(s) == {"champion": v1, "challenger": None, "previous-champion": None}
    assert tags(s, v1)["stage"] == "Production" and tags(s, v1)["decision"] == "manual_promotion"
    row = store.latest_decision_for_version(conn, s.model_name, v1)
    assert row["decision"] == "manual_promotion" and row["decided_by"] == "alice"
    assert row["justification"].startswith("approved by alice: checked the confusion matrix (weighted_f1 0.")
    assert store.get_run(conn, row["pipeline_run_id"])["step"] == "approve"
    assert decisions(conn) == [(v1, "needs_approval"), (v1, "manual_promotion")]

    r = cli("approve", v1, "--reason", "again", "--by", "alice")
    assert r.exit_code == 1
    assert re.fullmatch(rf"Error: approve failed \(run #\d+\): Version {v1} is already the champion; "
                        r"nothing to approve", cli_error(r))


# --- rollback ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rollback_restores_previous_champion_then_nothing_left(small_catalogue, cli, conn, settings):
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)
    promote(conn, s, T)
    v2 = challenger(conn, s, GOOD)
    assert promote(conn, s, T).outputs["decision"] == "promoted"
    assert alias_map(s)["previous-champion"] == v1

    r = cli("rollback", "--by", "bob")
    assert r.exit_code == 2 and "Missing option '--reason'" in r.output
    r = cli("rollback", "--reason", "", "--by", "bob")
    assert r.exit_code == 1 and cli_error(r).startswith("Error: A reason is required to roll back")
    assert query(conn, "SELECT count(*) FROM pipeline_runs WHERE step = 'rollback'")[0][0] == 0

    r = cli("rollback", "--reason", "v2 misroutes books", "--by", "bob")
    assert r.exit_code == 0, r.output
    assert "[ok] rollback (run #" in r.stdout and f"champion v{v2} -> v{v1}" in r.stdout
    assert "reason         v2 misroutes books" in r.stdout
    assert alias_map(s) == {"champion": v1, "challenger": None, "previous-champion": None}
    t2 = tags(s, v2)
    assert t2["stage"] == "Archived" and t2["rolled_back"] == "true" and t2["rollback_reason"] == "v2 misroutes books"
    assert tags(s, v1)["stage"] == "Production"
    assert registry.run_info(s, registry.get_version(s, v2)["mlflow_run_id"])["tags"]["rolled_back"] == "true"
    row = store.latest_decision_for_version(conn, s.model_name, v2)
    assert (row["decision"], row["justification"], row["decided_by"], row["restored_version"],
            row["previous_champion"]) == ("rolled_back", "v2 misroutes books", "bob", v1, None)
    run = store.get_run(conn, row["pipeline_run_id"])
    assert (run["step"], run["status"], run["actor"]) == ("rollback", "succeeded", "bob")
    note = query(conn, "SELECT subject, status, payload FROM notifications WHERE event = 'rollback'")
    assert [(subj, st) for subj, st, _p in note] == [(f"Model {s.model_name} rolled back from v{v2} to v{v1}",
                                                       "sent")]
    assert "Rolled back from version 2 to version 1" in note[0][2]["text"]
    assert "Reason:     v2 misroutes books" in note[0][2]["text"]
    context = note[0][2]["context"]  # the step's pipeline_runs id, by its unambiguous name
    assert context["pipeline_run_id"] == run["id"] and "run_id" not in context
    assert f"pipeline_run_id: {run['id']}" in note[0][2]["text"]

    # nothing left before v1: a clean error, exit code 1, a failed audit row, nothing moved
    r = cli("rollback", "--reason", "again")
    assert r.exit_code == 1
    assert re.fullmatch(r"Error: rollback failed \(run #\d+\): Nothing to roll back to: no version was in "
                        rf"production before version {v1} \(former champions: {v2}; pass --to-version to "
                        r"return to one of them\)", cli_error(r)), r.output
    assert alias_map(s)["champion"] == v1
    assert query(conn, "SELECT status FROM pipeline_runs WHERE step = 'rollback' ORDER BY id") == \
        [("succeeded",), ("failed",)]

    # models: v1 is the champion again, v2 shows the rollback and its reason
    models = {m["version"]: m for m in list_models(conn, s)}
    assert models[v1]["is_champion"] and not models[v2]["is_champion"]
    assert (models[v2]["decision"], models[v2]["reason"], models[v2]["rolled_back"]) == \
        ("rolled_back", "v2 misroutes books", True)
    r = cli("models")
    assert re.search(rf"^\*\s+{v1}\s+champion\s+Production", r.stdout, re.M), r.stdout


@pytest.mark.slow
def test_rollback_errors_and_to_version(small_catalogue, cli, conn, settings):
    s = settings.replace(min_f1_threshold=ONLY_GOOD)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, GOOD)
    promote(conn, s, T)

    def failure(**kw) -> str:
        with pytest.raises(StepFailed) as info:
            rollback(conn, s, T, **kw)
        return info.value.result.message

    assert failure(reason="x") == \
        f"Nothing to roll back to: version {v1} is the only version that has been in production"
    v2 = challenger(conn, s, WEAK)
    assert promote(conn, s, T).outputs["decision"] == "archived"
    assert failure(to_version="42", reason="x") == f"Model {s.model_name} has no version 42"
    assert failure(to_version=v2, reason="x") == \
        f"Version {v2} was never in production; rollback only returns to a former champion"
    assert failure(to_version=v1, reason="x") == f"Version {v1} is already the champion; nothing to roll back"
    with pytest.raises(MlopsError, match="A reason is required to roll back"):
        rollback(conn, s, T, reason="   ")
    assert alias_map(s)["champion"] == v1

    # v2 approved by hand, then rolled back to an explicitly named former champion
    approve(conn, s, Trigger(actor="erin"), v2, "try the small model")
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    r = rollback(conn, s, Trigger(actor="erin"), to_version=v1, reason="small model too weak")
    assert (r.outputs["from_version"], r.outputs["to_version"], r.outputs["previous_champion"]) == (v2, v1, None)
    assert alias_map(s) == {"champion": v1, "challenger": None, "previous-champion": None}

    # a registry failure half-way through a decision puts the aliases back as they were
    with pytest.raises(RuntimeError):
        with restoring_aliases(s):
            registry.set_alias(s, registry.CHAMPION, v2)
            registry.delete_alias(s, registry.PREVIOUS)
            raise RuntimeError("MLflow went away")
    assert alias_map(s)["champion"] == v1


def corrupt_model_files(settings, version) -> None:
    """Overwrite the pickled model of `version` in the artifact store (a lost or damaged artifact)."""
    from urllib.parse import unquote, urlparse

    import mlflow

    registry.configure(settings)
    client = mlflow.MlflowClient()
    root = Path(unquote(urlparse(client.get_model_version_download_uri(settings.model_name, str(version))).path))
    pickles = list(root.rglob("model.pkl"))
    assert pickles, f"no model.pkl under {root}"
    for f in pickles:
        f.write_bytes(b"not a pickle")


def test_a_rollback_to_a_version_that_cannot_serve_is_refused_and_nothing_moves(small_catalogue, conn, settings):
    """The former champion's artifacts are damaged: rolling back to it is refused, naming why,
    before anything moves. Before, the rollback succeeded, the API could not load the version and
    kept serving the one rolled back, and every later promote failed re-scoring the champion."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, GOOD)
    assert promote(conn, s, T).outputs["decision"] == "promoted"
    corrupt_model_files(s, v1)
    with pytest.raises(StepFailed) as info:
        rollback(conn, s, Trigger(actor="oncall"), reason="v2 bad on live traffic")
    message = info.value.result.message
    assert message.startswith(f"Version {v1} cannot serve, so it is not put back (the champion stays version {v2}): "
                              f"Cannot load model models:/{s.model_name}/{v1}: "), message
    assert alias_map(s) == {"champion": v2, "challenger": None, "previous-champion": v1}
    assert decisions(conn) == [(v1, "promoted"), (v2, "promoted")]
    assert tags(s, v2)["stage"] == "Production"


# --- broken channels ---------------------------------------------------------------------------------
def test_dead_smtp_and_slack_500_are_recorded_and_promote_still_succeeds(small_catalogue, conn, settings,
                                                                         receiver):  # noqa: F811
    receiver.behaviour["/hook"] = 500
    s = settings.replace(min_f1_threshold=BOTH_PASS, smtp_host="127.0.0.1", smtp_port=free_port(),
                         smtp_security="plain", smtp_timeout=2.0, notification_email="ml@example.org",
                         slack_webhook=receiver.url("/hook"))
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)
    r = promote(conn, s, T)
    assert r.status == "succeeded" and r.outputs["decision"] == "promoted"
    assert alias_map(s)["champion"] == v1
    rows = query(conn, "SELECT channel, status, error, pipeline_run_id FROM notifications ORDER BY id")
    run_id = r.pipeline_run_id
    assert [(c, st, rid) for c, st, _e, rid in rows] == [("log", "sent", run_id), ("email", "failed", run_id),
                                                         ("slack", "failed", run_id)]
    assert "HTTP 500" in rows[2][2] and rows[1][2]
    assert [n["status"] for n in r.outputs["notifications"]] == ["sent", "failed", "failed"]
    assert len(receiver.bodies("/hook")) == 1  # NOTIFY_RETRIES=0 in the tests
    assert store.get_run(conn, r.pipeline_run_id)["status"] == "succeeded"
    assert decisions(conn) == [(v1, "promoted")]


def test_a_version_rolled_back_is_not_put_back_by_the_next_automatic_promote(small_catalogue, conn, settings):
    """Alice approves v2, the on-call engineer rolls it back: the scheduled promote, which finds
    v2's evaluation used by no promote run, skips it (a person took it out of production), and
    the champion stays v1. Before, v2 still beat v1 on the holdout and went back to production."""
    s = settings.replace(min_f1_threshold=BOTH_PASS)
    v1, v2 = champion_and_challenger(conn, s, small_catalogue, GOOD)
    assert approve(conn, s, Trigger(actor="alice"), v2, reason="looks good").status == "succeeded"
    assert rollback(conn, s, Trigger(actor="oncall"), reason="v2 bad on live traffic").status == "succeeded"
    r = promote(conn, s, Trigger(triggered_by="cron", actor="cron"))
    assert (r.status, r.message) == ("skipped", f"version {v2} was rolled back from production (by oncall): an "
                                                f"automatic promote does not put it back; `mlops approve {v2} "
                                                "--reason ...` does")
    assert alias_map(s)["champion"] == v1
    assert [d for d in decisions(conn) if d[0] == v2][-1][1] == "rolled_back"
