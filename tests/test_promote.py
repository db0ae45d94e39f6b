import time, json
from mlops_cli.runs import Trigger
from mlops_cli.steps.load import load
from mlops_cli.steps.train import train
from mlops_cli.steps.evaluate import evaluate
from mlops_cli import registry

def test_timing(small_catalogue, settings, conn):
    x, y = small_catalogue
    s = settings.replace(initial_load_fraction=1.0)
    t = time.time(); load(conn, s, Trigger(), x_path=str(x), y_path=str(y)); print("load", time.time()-t)
    for params in ({"word_max_features": 20000, "char_max_features": 20000},
                   {"word_max_features": 50, "char_max_features": 50, "alpha": 1.0},
                   {"word_max_features": 2000, "char_max_features": 2000, "alpha": 1e-3}):
        t = time.time(); r = train(conn, s, Trigger(), force=True, params=params); print("train", time.time()-t, r.message)
        t = time.time(); r = evaluate(conn, s, Trigger()); print("eval", time.time()-t, r.message)
    c = registry.client(s)
    t = time.time()
    mv = c.copy_model_version(f"models:/{s.model_name}/1", s.model_name + "-copy")
    print("copy", time.time()-t, mv.version, mv.source, mv.run_id)
    t = time.time()
    s2 = s.replace(model_name=s.model_name + "-copy")
    from mlops_cli.steps.evaluate import evaluate_version
    print(evaluate_version(conn, s2, "1", purpose="evaluation", pipeline_run_id=None), time.time()-t)
