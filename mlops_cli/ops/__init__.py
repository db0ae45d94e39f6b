"""The operations layer: one function per use case, called by every front end alike.

The CLI (cli.py), the API (mlops_cli.api) and the control room (streamlit_app/) parse their
input, call one function here and render what it returns; every rule about who may do what and
what gets audited lives here, so each front end gets it:

- ops.runs       pipeline runs (list, detail), the catalogue, loading a batch
- ops.models     model versions, the champion, train / evaluate / approve / rollback / retrain
- ops.alerts     drift alerts: list, detail, acknowledge, resolve, clear, record a decision
- ops.thresholds the drift thresholds in force, and their (partial) update or reset
- ops.drift      drift reports and score history
- ops.feedback   a moderator's correction tied to its logged prediction
- ops.labelling  the labelling queue: the served predictions most worth a label, with why

Functions take the actor (who acts: required for every action) and the settings or an open
connection, as the library below does, and raise the typed errors of mlops_cli.errors
(NotFound, Conflict, Invalid, Unavailable); each front end maps their `code` once.
Value lists (statuses, levels, causes, actions) are the enums of mlops_cli.vocab.
"""
