"""`mlic tune`: an Optuna study over params keys (`tune.space`), each trial one DVC experiment of the pipeline.

A trial draws a value for every key of `tune.space`, then runs, in the project (the params file's folder),

    dvc exp run -n <study>-<k> -S key=value ... -S train.folds=[<tune.folds>] <tune.target>

and its value is `oof_f<beta>_nested` of `thresholds.metrics_file` (the nested sample F-beta of the submission's
thresholds), maximised. While the run goes on, the DVCLive validation curves `val_f<beta>.tsv` of its train stages
are read every `tune.poll_seconds` and reported to Optuna (`CurveWatcher`). When the pruner (`tune.pruner`) says so,
the run is stopped (SIGINT to its process group, so that DVC releases its locks; SIGKILL after a grace period), the
workspace's params file and dvc.lock are put back as they were before the trial, and the trial is PRUNED. A failed
run fails its trial with the command's last lines (the whole output is in `<storage>-logs/<experiment>.log`), the
workspace is put back the same way, and the study goes on unless `tune.max_failures` trials have failed in a row.

The study lives in SQLite (`tune.storage`, which must be git-ignored, or `dvc exp run` would take it for one of the
experiment's files), so that rerunning resumes it: `tune.trials` (or `--trials`) counts the trials it holds, and
trial k's TPE sampler is seeded with `tune.seed + k`. At the end the trials are listed, and the best experiment is
applied to the workspace (`dvc exp apply`), with `train.folds` set back to the workspace's own, ready for a full
`dvc repro`.

Nothing here imports torch: the pipeline runs in `dvc` subprocesses. The modules, each importing only those above it:
`overrides` (values as `dvc exp run -S` parses them), `curves` (the running trial's validation curves), `runner`
(`dvc exp run` as a watched subprocess), `trial` (one trial run and scored), `study` (the study, and `tune`, the
entry point of `mlic tune`). The space's language and its sampling are `mlic.search_space`, which params loading
uses too.
"""
