"""Conditional promotion of an evaluated challenger, and manual approval.

`mlops promote` decides on the newest evaluated challenger not decided on yet (gate: a succeeded
evaluate run that no promote run has consumed; evaluations of the champion are passed over), or on
a given version / MLflow run id. Champion
and challenger are scored on the SAME current holdout (the champion is re-scored, purpose
'champion-recheck'; the challenger's evaluation is reused when it was made on that holdout). Rule:

    promote  iff AUTO_PROMOTION_ENABLED and score > MIN_F1_THRESHOLD
                 and (no champion or score > champion score + MIN_IMPROVEMENT)
                 and (not PROMOTION_REQUIRE_BEAT_BASELINE or training score >= its plain baseline)

on PROMOTION_METRIC (weighted_f1 by default), then, when promotion requires live evidence
(SHADOW_MIN_REQUESTS > 0) and a champion serves traffic, on the shadow challenger's answers to it
(shadow_report.evidence; docs/shadow.md):

    a holdout winner with fewer than SHADOW_MIN_REQUESTS shadow requests, or fewer than
    SHADOW_MIN_LABELLED of them labelled, is not decided on: the step is skipped with
    'awaiting live evidence: <n> of <min> shadow requests ...', it stays the challenger, and the
    next promote (the daily pipeline's, or `mlops promote`) decides again (a skipped run does not
    consume its evaluate run); with the evidence there, it is refused ('archived') when its live
    weighted F1 on the labelled requests is below the champion's on the same requests by more
    than SHADOW_MAX_F1_LOSS; the justification names the live numbers either way.

The plain baseline (TF-IDF + LinearSVC) is the one
`mlops train` fitted beside the challenger on the same rows and scored on the same holdout (the
version's tags `baseline_<metric>` and `<metric>`): a challenger whose score is below it is
refused, because then the pipeline, not the data, is wrong. A tie passes: the search includes the
plain configuration itself, and when it picks it the challenger *is* its baseline (same model,
same score); refusing ties would then never promote anything. With auto-promotion off the
decision is 'needs_approval' (recorded, nothing moves; `mlops approve` promotes); otherwise
'archived'.

Every decision is one audited step: a model_decisions row, the registry aliases and version tags,
a description and run tags in MLflow, and a notification (log, email, Slack) whose notifications
rows land in the step's transaction. The registry is not transactional: when a registry call
fails half-way, the aliases are put back as they were and the step fails (nothing recorded).
Promote, approve and rollback take one transaction-level advisory lock so they never interleave.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

from .. import notify, registry, runs, store
from ..config import Settings
from ..errors import Conflict, Invalid, NotFound, NotReady
from ..jsonvalues import jsonable
from ..notify import Message
from ..runs import StepResult, StepRun, Trigger, lock_key, run_step
from ..serving.shadow import load_failures as shadow_load_failures
from ..vocab import Step
from .evaluate import current_holdout, evaluate_version, version_for_run

log = logging.getLogger(__name__)

STEP = Step.PROMOTE.value
APPROVE_STEP = Step.APPROVE.value
METRICS = ("weighted_f1", "macro_f1", "accuracy")
CHAMPION_LOCK = "registry:champion"
NOTIFY_KINDS = ("log", "email", "slack")


# --- shared helpers (also used by rollback) ---------------------------------------------------
def promotion_metric(settings: Settings) -> str:
    metric = (settings.promotion_metric or "weighted_f1").strip()
    if metric not in METRICS:
        raise Invalid(f"PROMOTION_METRIC must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def lock_champion(conn) -> None:
    """Serialise every step that moves the champion alias (until the step's transaction ends)."""
    store.champion_lock(conn, lock_key(CHAMPION_LOCK))


def actor_of(trigger: Trigger) -> str:
    return trigger.actor or trigger.triggered_by


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def aliases(settings: Settings) -> dict[str, str | None]:
    """alias -> version (None when unset) for champion, challenger and previous-champion."""
    out = {}
    for alias in registry.ALIASES:
        v = registry.version_by_alias(settings, alias)
        out[alias] = v["version"] if v else None
    return out


@contextmanager
def restoring_aliases(settings: Settings) -> Iterator[dict[str, str | None]]:
    """Snapshot the aliases; if the block raises, put them back as they were (best effort)."""
    before = aliases(settings)
    try:
        yield before
    except BaseException:
        for alias, version in before.items():
            try:
                if version is None:
                    registry.delete_alias(settings, alias)
                else:
                    registry.set_alias(settings, alias, version)
            except Exception as exc:  # keep the original error; say what could not be undone
                log.error("could not restore alias %s -> %s after a failed step: %s", alias, version, exc)
        raise


def model_links(settings: Settings, version: str) -> dict[str, str]:
    uri = settings.mlflow_tracking_uri or ""
    if not uri.startswith("http"):
        return {}
    parts = urlsplit(uri)  # without user:password@: the link goes to Slack, email, the log
    base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")
    return {f"MLflow version {version}": f"{base}/#/models/{quote(settings.model_name, safe='')}/versions/{version}"}


def _num(value: float) -> str:
    return f"{value:g}"


# --- the rule -----------------------------------------------------------------------------------
def baseline_of(info: dict, metric: str) -> tuple[float, float] | None:
    """(the version's training score, its plain baseline's) on `metric`, both on the holdout of
    its training, from the version tags `mlops train` sets; None for a version without them."""
    tags = info.get("tags") or {}
    try:
        return float(tags[metric]), float(tags[f"baseline_{metric}"])
    except (KeyError, TypeError, ValueError):
        return None


def live_shortfall(live: dict | None, min_requests: int, min_labelled: int) -> str | None:
    """What live evidence is still missing ('120 of 500 shadow requests'), None when there is
    enough (always, with min_requests 0: none required). live: shadow_report.evidence()."""
    if min_requests <= 0:
        return None
    n, labelled = (live or {}).get("n", 0), (live or {}).get("n_labelled", 0)
    if n >= min_requests and labelled >= min_labelled:
        return None
    text = (f"{n} of {min_requests} shadow requests (SHADOW_MIN_REQUESTS)" if n < min_requests
            else f"{n} shadow requests")
    if min_labelled:
        text += (f", {labelled} of {min_labelled} of them labelled (SHADOW_MIN_LABELLED)" if labelled < min_labelled
                 else f", {labelled} of them labelled")
    return text


def live_text(live: dict) -> str:
    """The live numbers of a justification: agreement, and both weighted F1 on the labelled requests."""
    agreement = "n/a" if live.get("agreement") is None else f"{live['agreement']:.1%}"
    text = f"agreement {agreement} on {live['n']} shadow requests"
    if live.get("n_labelled"):
        text += (f", live weighted F1 {live['challenger_weighted_f1']:.4f} vs champion v{live['champion_version']} "
                 f"{live['champion_weighted_f1']:.4f} on the same {live['n_labelled']} labelled requests "
                 f"({live['challenger_weighted_f1'] - live['champion_weighted_f1']:+.4f})")
    else:
        text += ", none labelled (live F1 not compared)"
    return text


def decide(metric: str, candidate_score: float, champion_version: str | None, champion_score: float | None,
           *, threshold: float, min_improvement: float, auto_promotion: bool,
           baseline: tuple[float, float] | None = None, require_baseline: bool = True,
           live: dict | None = None, min_requests: int = 0, min_labelled: int = 0,
           max_f1_loss: float = 0.0) -> tuple[str, str, str]:
    """(decision, rule as evaluated, justification) for a candidate. Pure: no I/O.

    PROMOTE iff auto_promotion and candidate > threshold and (no champion or candidate > champion +
    min_improvement) and (no baseline known, or not required, or the candidate's training score >=
    its plain baseline's: baseline = (training score, baseline score); a tie passes, see the module
    docstring) and the live condition; auto-promotion off -> 'needs_approval'; else 'archived'.

    Live condition (min_requests > 0 and a champion; live = shadow_report.evidence() of this
    candidate against that champion): a candidate that passes the rest but has less evidence than
    required is 'awaiting_evidence' (nothing is decided: it stays the challenger); with enough, it
    fails when its live weighted F1 is below the champion's by more than max_f1_loss on the
    labelled requests (at least one). Without the requirement, live numbers given are only quoted.
    """
    c = candidate_score
    above = c > threshold
    has_champion = champion_version is not None and champion_score is not None
    beats = (not has_champion) or c > champion_score + min_improvement
    beats_baseline = baseline is None or baseline[0] >= baseline[1]  # not below it
    yes = {True: "yes", False: "no"}
    rule = (f"AUTO_PROMOTION_ENABLED ({yes[auto_promotion]}) and {metric} {c:.4f} > MIN_F1_THRESHOLD "
            f"{_num(threshold)} ({yes[above]}) and ")
    if has_champion:
        rule += (f"{metric} {c:.4f} > champion v{champion_version} {champion_score:.4f} + MIN_IMPROVEMENT "
                 f"{_num(min_improvement)} ({yes[beats]})")
    else:
        rule += "no champion to beat (yes)"
    if baseline is not None:
        rule += (f" and {metric} {baseline[0]:.4f} >= plain baseline {baseline[1]:.4f} on the training holdout "
                 + (f"({yes[beats_baseline]})" if require_baseline
                    else f"(not required: PROMOTION_REQUIRE_BEAT_BASELINE=false, {yes[beats_baseline]})"))
    refused = require_baseline and not beats_baseline

    plus = f" + {_num(min_improvement)}" if min_improvement else ""
    if not above:
        text = f"{metric} {c:.4f} <= threshold {_num(threshold)}"
    elif not has_champion:
        text = f"{metric} {c:.4f} > threshold {_num(threshold)} and no champion yet"
    elif beats:
        text = (f"{metric} {c:.4f} > threshold {_num(threshold)} and > champion v{champion_version} "
                f"{champion_score:.4f}{plus} ({c - champion_score:+.4f})")
    else:
        text = (f"{metric} {c:.4f} > threshold {_num(threshold)} but not > champion v{champion_version} "
                f"{champion_score:.4f}{plus} ({c - champion_score:+.4f})")
    if baseline is not None:
        # first: a pipeline that cannot beat the plain baseline is the headline, whatever follows
        trained, plain = baseline
        versus = f"{metric} {trained:.4f} vs plain baseline {plain:.4f} ({trained - plain:+.4f} on its training holdout)"
        if refused:
            text = (f"refused: {metric} {trained:.4f} is below its plain baseline {plain:.4f} "
                    f"({trained - plain:+.4f}; TF-IDF + LinearSVC fitted on the same rows, scored on the same "
                    f"holdout): the pipeline, not the data, is wrong; {text}")
        elif beats_baseline and trained > plain:
            text = f"beats its plain baseline: {versus}; {text}"
        elif beats_baseline:
            text = f"level with its plain baseline (not below it, so allowed): {versus}; {text}"
        else:
            text = (f"below its plain baseline, not required (PROMOTION_REQUIRE_BEAT_BASELINE=false): "
                    f"{versus}; {text}")
    would = above and beats and not refused
    required = has_champion and min_requests > 0
    if required:
        live = live or {"n": 0, "n_labelled": 0, "champion_version": champion_version}
        missing = live_shortfall(live, min_requests, min_labelled)
        rule += (f" and live evidence: {live['n']} >= SHADOW_MIN_REQUESTS {min_requests} shadow requests, "
                 f"{live['n_labelled']} >= SHADOW_MIN_LABELLED {min_labelled} labelled ({yes[missing is None]})")
        loss, too_much = None, False
        if missing is None and live["n_labelled"]:
            loss = live["champion_weighted_f1"] - live["challenger_weighted_f1"]
            # a loss equal to the maximum is allowed: 0.8000 - 0.7800 is 0.02000000000000002 in floats
            too_much = loss - max_f1_loss > 1e-9
            rule += (f" and live weighted F1 {live['challenger_weighted_f1']:.4f} >= champion "
                     f"{live['champion_weighted_f1']:.4f} - SHADOW_MAX_F1_LOSS {_num(max_f1_loss)} "
                     f"({yes[not too_much]})")
        if would and missing is not None:
            return ("awaiting_evidence", rule,
                    f"awaiting live evidence: {missing}; {text}: stays the challenger, decided again once the "
                    "evidence is there")
        if missing is None and would and too_much:
            would = False
            text = (f"refused on live traffic: weighted F1 {live['challenger_weighted_f1']:.4f} vs champion "
                    f"v{champion_version} {live['champion_weighted_f1']:.4f} on the same {live['n_labelled']} "
                    f"labelled requests ({-loss:+.4f}, a loss above SHADOW_MAX_F1_LOSS {_num(max_f1_loss)}; "
                    f"agreement {live['agreement']:.1%} on {live['n']} shadow requests) although it wins on the "
                    f"holdout: {text}")
        elif live["n"]:
            text = f"{text}; live: {live_text(live)}"
    elif has_champion and live and live.get("n"):
        text = f"{text}; live (not required: SHADOW_MIN_REQUESTS=0): {live_text(live)}"
    if not auto_promotion:
        verdict = "promoted" if would else "archived"
        return ("needs_approval", rule,
                f"{text}: would be {verdict}, but auto-promotion is disabled (AUTO_PROMOTION_ENABLED=false): "
                "needs approval")
    if would:
        return "promoted", rule, f"{text}: promoted"
    kept = f"champion v{champion_version} kept" if has_champion else "no champion"
    return "archived", rule, f"{text}: archived ({kept})"


# --- scoring ------------------------------------------------------------------------------------
def score_against_champion(conn, settings: Settings, version: str, champion: dict | None, metric: str,
                           run_id: int) -> dict:
    """Candidate and champion scores on the same current holdout rows."""
    holdout = current_holdout(conn, settings)
    rows, holdout_hash = holdout
    evaluation = store.latest_succeeded_evaluation(conn, settings.model_name, version)
    if evaluation is not None and evaluation["holdout_hash"] == holdout_hash:
        candidate, rescored = float(evaluation[metric]), False
    else:
        log.info("version %s was evaluated on another holdout: re-scoring it on the current one", version)
        candidate = float(evaluate_version(conn, settings, version, purpose="evaluation", pipeline_run_id=run_id,
                                           holdout=holdout)[metric])
        rescored = True
    champion_version = champion["version"] if champion else None
    champion_score = None
    if champion_version is not None and champion_version != version:
        log.info("re-scoring the champion (version %s) on the same %d holdout rows", champion_version, len(rows))
        champion_score = float(evaluate_version(conn, settings, champion_version, purpose="champion-recheck",
                                                pipeline_run_id=run_id, holdout=holdout)[metric])
    return {"candidate_score": candidate, "candidate_rescored": rescored, "champion_version": champion_version,
            "champion_score": champion_score, "holdout_rows": len(rows), "holdout_hash": holdout_hash}


def live_evidence(conn, settings: Settings, champion_version: str | None, version: str) -> dict | None:
    """The shadow challenger's evidence for `version` against the champion (shadow_report.evidence),
    when the shadow runs (SHADOW_ENABLED, or SHADOW_MIN_REQUESTS > 0) and there is a champion."""
    from ..serving.shadow import shadow_active

    if champion_version is None or not shadow_active(settings):
        return None
    from ..shadow_report import evidence

    return evidence(conn, champion_version, version)


# --- applying a decision --------------------------------------------------------------------------
def _apply(settings: Settings, decision: str, version: str, info: dict, champion_version: str | None,
           justification: str, actor: str, tags_extra: dict) -> None:
    """Registry side of a decision: aliases, version tags, description, run tags."""
    decided_at = now_iso()
    common = {"decision": decision, "reason": justification[:4900], "decided_at": decided_at,
              "decided_by": actor}
    with restoring_aliases(settings) as before:
        if decision in ("promoted", "manual_promotion"):
            # the decision tags first: a step killed once the alias has moved leaves a champion
            # that says how it got there, and which version it replaced (interrupted_promotion)
            registry.set_version_tags(settings, version, {"stage": "Production", **common,
                                                          "replaces": champion_version or ""})
            registry.set_alias(settings, registry.CHAMPION, version)
            if runs.FAULT_HOOK is not None:  # tests only: killed between the two aliases
                runs.FAULT_HOOK("promote.champion_moved")
            if champion_version and champion_version != version:
                registry.set_alias(settings, registry.PREVIOUS, champion_version)
                registry.set_version_tags(settings, champion_version,
                                          {"stage": "Archived", "archived_at": decided_at,
                                           "replaced_by": version})
            if before.get(registry.CHALLENGER) == version:
                registry.delete_alias(settings, registry.CHALLENGER)
            stage = "Production"
        elif decision == "archived":
            if before.get(registry.CHALLENGER) == version:
                registry.delete_alias(settings, registry.CHALLENGER)  # decided on: no longer a challenger
            stage = "Archived"
        else:  # needs_approval: nothing moves, it stays the challenger
            stage = "None"
        if stage != "Production":
            registry.set_version_tags(settings, version, {"stage": stage, **common})
        registry.set_description(settings, version, justification)
        if info.get("mlflow_run_id"):
            registry.set_run_tags(settings, info["mlflow_run_id"], {"decision": decision, "decided_at": decided_at,
                                                                    **tags_extra})


def _record_and_notify(conn, settings: Settings, step: StepRun, trigger: Trigger, *, decision: str,
                       version: str, info: dict, metric: str, scores: dict, rule: str,
                       justification: str, champion_version: str | None) -> None:
    actor = actor_of(trigger)
    promoted = decision in ("promoted", "manual_promotion")
    previous = champion_version if promoted and champion_version and champion_version != version else None
    decision_id = store.insert_decision(
        conn, pipeline_run_id=step.pipeline_run_id, model_name=settings.model_name, model_version=version,
        mlflow_run_id=info.get("mlflow_run_id"), decision=decision, metric=metric,
        candidate_score=scores["candidate_score"], champion_version=champion_version,
        champion_score=scores["champion_score"], threshold=settings.min_f1_threshold,
        min_improvement=settings.min_improvement, rule=rule, justification=justification, decided_by=actor,
        triggered_by=trigger.triggered_by, previous_champion=previous,
    )
    run_tags = {f"candidate_{metric}": f"{scores['candidate_score']:.4f}",
                f"baseline_{metric}": "n/a" if scores.get("baseline_score") is None
                else f"{scores['baseline_score']:.4f}",
                "champion_version": champion_version or "none",
                f"champion_{metric}": "n/a" if scores["champion_score"] is None else f"{scores['champion_score']:.4f}",
                "decision_reason": justification[:4900]}
    _apply(settings, decision, version, info, champion_version, justification, actor, run_tags)
    if runs.FAULT_HOOK is not None:  # tests only: the step dies once the registry has moved
        runs.FAULT_HOOK("promote.registry_moved")
    after = aliases(settings)

    name = settings.model_name
    subject = {
        "promoted": f"Model {name} v{version} promoted to production",
        "manual_promotion": f"Model {name} v{version} promoted to production by {actor}",
        "archived": f"Model {name} v{version} archived"
                    + (f" (champion v{champion_version} kept)" if champion_version else " (no champion)"),
        "needs_approval": f"Model {name} v{version} needs approval",
    }[decision]
    score_lines = {"candidate": scores["candidate_score"]}
    if scores["champion_score"] is not None:
        score_lines["champion"] = scores["champion_score"]
        score_lines["improvement"] = scores["candidate_score"] - scores["champion_score"]
    if scores.get("baseline_score") is not None:
        score_lines["plain baseline (training holdout)"] = scores["baseline_score"]
    message = Message(
        "promotion", subject, "warning" if decision == "needs_approval" else "info",
        {"decision": decision, "model_name": name, "metric": metric, "candidate_version": version,
         "candidate_score": scores["candidate_score"], "champion_version": champion_version,
         "champion_score": scores["champion_score"], "baseline_score": scores.get("baseline_score"),
         "threshold": settings.min_f1_threshold,
         "min_improvement": settings.min_improvement, "justification": justification, "scores": score_lines,
         "rule": rule, "decided_by": actor, "holdout_rows": scores["holdout_rows"],
         **({"live": live_text(scores["live"])} if scores.get("live") and scores["live"]["n"] else {}),
         "pipeline_run_id": step.pipeline_run_id,
         "aliases": {k: v for k, v in after.items() if v}, "links": model_links(settings, version)},
    )
    deliveries = notify.send(conn, settings, message, kinds=NOTIFY_KINDS, pipeline_run_id=step.pipeline_run_id)
    step.outputs.update({
        "decision": decision, "decision_id": decision_id, "model_name": name, "model_version": version,
        "mlflow_run_id": info.get("mlflow_run_id"), "metric": metric, **scores,
        "threshold": settings.min_f1_threshold, "min_improvement": settings.min_improvement,
        "auto_promotion_enabled": settings.auto_promotion_enabled,
        "require_beat_baseline": settings.promotion_require_beat_baseline, "rule": rule,
        "justification": justification, "decided_by": actor, "previous_champion": previous,
        "aliases": after,
        "notifications": [{"channel": d.channel, "status": d.status, "error": d.error} for d in deliveries],
    })
    step.message = f"version {version}: {justification}"


# --- the steps ----------------------------------------------------------------------------------
def promote(conn, settings: Settings, trigger: Trigger, *, mlflow_run_id: str | None = None,
            version: str | int | None = None) -> StepResult:
    """Decide on a challenger (default: the newest evaluated one not decided on yet), or on the
    version given by its number or by the MLflow run that trained it."""
    if mlflow_run_id and version:
        raise Invalid("Give --mlflow-run-id or --version, not both")
    metric = promotion_metric(settings)

    def body(step: StepRun) -> None:
        lock_champion(conn)
        if version is not None or mlflow_run_id:
            target = str(version) if version is not None else version_for_run(settings, mlflow_run_id)
            info = registry.get_version(settings, target)
            evaluate_run = store.latest_evaluate_run_for_version(conn, settings.model_name, target)
            if evaluate_run is None:
                raise NotReady(f"Version {target} has no succeeded evaluation: run "
                               f"`mlops evaluate --version {target}` before promoting it")
            step.consume(evaluate_run)
        else:
            # only ever the newest one; an evaluation of the champion (a re-check by hand) is passed
            # over: it does not hide the challenger's
            upstream = store.latest_unconsumed(conn, "evaluate", STEP, unless="of_champion")
            if upstream is None or not upstream["outputs"].get("model_version"):
                step.skip("nothing left to decide: every evaluated challenger has a decision "
                          "(train and evaluate a new version first)")
                return
            step.consume(upstream["id"])
            target = str(upstream["outputs"]["model_version"])
            latest = store.latest_decision_for_version(conn, settings.model_name, target)
            if latest and latest["decision"] == "rolled_back":
                # a person took it out of production: only a person puts it back
                step.skip(f"version {target} was rolled back from production (by {latest['decided_by'] or 'someone'}): "
                          f"an automatic promote does not put it back; `mlops approve {target} --reason ...` does")
                return
            info = registry.get_version(settings, target)
        champion = registry.version_by_alias(settings, registry.CHAMPION)
        resumed = False
        if champion and champion["version"] == target:
            interrupted, replaced = interrupted_promotion(conn, settings, target, info)
            if not interrupted:
                step.skip(f"version {target} is already the champion; nothing to decide")
                return
            # the registry moved but the decision was never recorded (the step died in between):
            # decide again against the champion it replaced, and record and notify it now
            champion, resumed = replaced, True
        scores = score_against_champion(conn, settings, target, champion, metric, step.pipeline_run_id)
        baseline = baseline_of(info, metric)
        scores["baseline_score"] = None if baseline is None else baseline[1]
        scores["candidate_training_score"] = None if baseline is None else baseline[0]
        scores["live"] = live_evidence(conn, settings, scores["champion_version"], target)
        decision, rule, justification = decide(
            metric, scores["candidate_score"], scores["champion_version"], scores["champion_score"],
            threshold=settings.min_f1_threshold, min_improvement=settings.min_improvement,
            auto_promotion=settings.auto_promotion_enabled, baseline=baseline,
            require_baseline=settings.promotion_require_beat_baseline, live=scores["live"],
            min_requests=settings.shadow_min_requests, min_labelled=settings.shadow_min_labelled,
            max_f1_loss=settings.shadow_max_f1_loss)
        if resumed:  # first: a champion already, it cannot wait for evidence as a challenger
            if decision != "promoted":
                raise Conflict(
                    f"version {target} is the champion, but its promotion was never recorded (a promote step "
                    f"died after moving the registry at {info['tags'].get('decided_at', '?')}), and the rule "
                    f"now says {decision}: {justification}. A person decides: keep it with `mlops approve "
                    f"{target} --reason ... --by NAME`, or put the champion back with `mlops rollback"
                    + (f" --to-version {scores['champion_version']}" if scores["champion_version"] else "")
                    + " --reason ... --by NAME`")
            justification = (f"recorded after the promote step that moved the registry at "
                             f"{info['tags'].get('decided_at', '?')} died before recording it; {justification}")
        if decision == "awaiting_evidence":
            # not a decision: nothing recorded in model_decisions or the registry; this skipped
            # run (its outputs: the rule, the scores, the live numbers) is the audit
            unloadable = shadow_load_failures(conn, settings, target)
            if unloadable:  # the evidence cannot come: say why, or the wait looks like slow traffic
                first = unloadable[0]
                since = first["first_at"].astimezone(timezone.utc)
                justification += (f"; the API's shadow cannot load version {target} (on "
                                  f"{', '.join(u['host'] for u in unloadable)}, since {since:%Y-%m-%d %H:%M} UTC: "
                                  f"{first['error'][:300]}): no live evidence comes until it loads "
                                  "(GET /health, shadow.load_error)")
                step.outputs["shadow_load_failures"] = jsonable(unloadable)  # its times as ISO text
            step.outputs.update({"decision": decision, "model_name": settings.model_name, "model_version": target,
                                 "mlflow_run_id": info.get("mlflow_run_id"), "metric": metric, **scores,
                                 "shadow_min_requests": settings.shadow_min_requests,
                                 "shadow_min_labelled": settings.shadow_min_labelled,
                                 "shadow_max_f1_loss": settings.shadow_max_f1_loss,
                                 "rule": rule, "justification": justification})
            log.info("version %s: %s", target, justification)
            step.skip(f"version {target}: {justification}")
            return
        _record_and_notify(conn, settings, step, trigger, decision=decision, version=target, info=info,
                           metric=metric, scores=scores, rule=rule, justification=justification,
                           champion_version=scores["champion_version"])
        if resumed:
            step.outputs["resumed"] = True

    return run_step(conn, trigger, STEP, body,
                    params={"mlflow_run_id": mlflow_run_id, "version": None if version is None else str(version)})


def interrupted_promotion(conn, settings: Settings, version: str, info: dict) -> tuple[bool, dict | None]:
    """(whether `version` is the champion by a promotion that was never recorded, the champion it
    replaced or None). _apply tags the version `decision=promoted` and `replaces=<the champion>`
    before it moves the champion alias, then points previous-champion at the replaced version,
    all before the step commits its model_decisions row: a promote step that dies anywhere after
    the alias moved leaves those tags and no row. A champion the last recorded change of
    production put there (a promotion, or a rollback restoring it) is not one: the same rule as
    champion_audit's."""
    tags = info.get("tags") or {}
    if tags.get("decision") != "promoted":
        return False, None
    recorded = store.latest_production_change(conn, settings.model_name)
    if recorded is not None and recorded["version"] == version:
        return False, None
    if tags.get("replaces"):  # the alias moved, maybe not previous-champion yet
        replaced = _registered(settings, tags["replaces"])
        if replaced is not None:
            return True, replaced
    previous = registry.version_by_alias(settings, registry.PREVIOUS)
    if previous is not None and (previous.get("tags") or {}).get("replaced_by") == version:
        return True, previous
    return True, None


def _registered(settings: Settings, version: str) -> dict | None:
    try:
        return registry.get_version(settings, version)
    except NotFound:  # deleted from the registry since: nothing to compare with
        return None


def approve(conn, settings: Settings, trigger: Trigger, version: str | int, reason: str) -> StepResult:
    """A person promotes an evaluated version (typically one that 'needs_approval'), or keeps a
    champion that the alias names with no decision recorded, recorded from now on."""
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("A reason is required to approve a version: pass --reason \"...\"")
    target = str(version)
    metric = promotion_metric(settings)

    def body(step: StepRun) -> None:
        lock_champion(conn)
        info = registry.get_version(settings, target)
        champion = registry.version_by_alias(settings, registry.CHAMPION)
        unrecorded = False
        if champion and champion["version"] == target:
            recorded = store.latest_production_change(conn, settings.model_name)
            if recorded is not None and recorded["version"] == target:
                raise Conflict(f"Version {target} is already the champion; nothing to approve")
            # the alias names it with no decision recorded (moved in the registry, or a step that
            # moved it died: champion_audit): approving keeps it, recorded against the version
            # the last recorded change put in production
            champion, unrecorded = (_registered(settings, recorded["version"]) if recorded else None), True
        if store.latest_succeeded_evaluation(conn, settings.model_name, target) is None:
            raise NotReady(f"Version {target} has no succeeded evaluation: run "
                           f"`mlops evaluate --version {target}` before approving it")
        step.consume(store.latest_evaluate_run_for_version(conn, settings.model_name, target))
        scores = score_against_champion(conn, settings, target, champion, metric, step.pipeline_run_id)
        actor = actor_of(trigger)
        c, threshold = scores["candidate_score"], settings.min_f1_threshold
        versus = (f"champion v{scores['champion_version']} {scores['champion_score']:.4f} "
                  f"({c - scores['champion_score']:+.4f})" if scores["champion_score"] is not None
                  else "no champion")
        rule = (f"manual approval by {actor} (the automatic rule is not applied: {metric} {c:.4f} "
                f"{'>' if c > threshold else '<='} threshold {_num(threshold)})")
        justification = f"approved by {actor}: {reason} ({metric} {c:.4f}, vs {versus}): promoted"
        if unrecorded:
            justification += ("; the champion alias already named it with no decision recorded: "
                              "recorded now")
        _record_and_notify(conn, settings, step, trigger, decision="manual_promotion", version=target,
                           info=info, metric=metric, scores=scores, rule=rule, justification=justification,
                           champion_version=scores["champion_version"])
        step.outputs.update({"reason": reason, "unrecorded_champion": unrecorded})

    return run_step(conn, trigger, APPROVE_STEP, body, params={"version": target, "reason": reason})
