"""The leaderboard's parts, one job each; `benchmarks/leaderboard.py` is the command that puts them together.

- `params`: each row's `models` entry at the budget, and the params files the stages read.
- `stages`: running one `mlic` stage in this process, its output to a log.
- `cache`: a row's result and the shared stages' outputs, reused while their params and code are unchanged.
- `runner`: the shared stages once, then each row's stages, scores, sizes and timings.
- `table`: the result as markdown.
"""
