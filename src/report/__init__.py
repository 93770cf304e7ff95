"""The report of a grid, from its results.json files (never from W&B): tables and the gap closed
(tables.py), plots (plots.py), the static page (html.py), the saved W&B workspace (dashboard.py) and
the Hydra callback that writes the report when a multirun ends (callback.py).

    python -m src.report multirun/demo --teacher conf/teacher/demo.yaml
"""
