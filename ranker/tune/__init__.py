"""Fine-tuning zoo members: plainly (the benchmarks' ground-truth recipe), and by B-Tuning, with the next-ranked
members as teachers.

``finetune.py`` holds plain fine-tuning (what ``data/build_history.py`` records); ``btuning.py`` B-Tuning (LogME
posterior weights, teacher weights pi, the Lightning module and the training run), which extends plain fine-tuning
by the teachers' term alone; ``distill.py`` knowledge distillation from the same teachers (the baseline B-Tuning is
measured against); ``__main__.py`` the command ``python -m ranker.tune`` (rank, then tune, then write the
tuned model). A layer above ``serve``: it may import ``files``, ``zoo``, ``tasks``, ``transfer`` and ``serve`` (the
command ranks through ``serve.pipeline``).
"""
