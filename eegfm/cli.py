"""`eegfm`: one command-line program, one verb per job. The Makefile only wraps it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eegfm.errors import ConfigError, DataError, EegfmError
from eegfm.storage import join_url


def _shards(args: argparse.Namespace) -> int:
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards

    if (args.dataset is None) == (args.task is None):
        raise ConfigError("eegfm shards: give exactly one of --dataset (pretraining) and --task (labelled)")
    labeller = None
    if args.task is not None:
        from eegfm.ingest.tasks import Labeller, dataset_recipe, load_task

        task = load_task(args.task, args.overrides)
        recipe = dataset_recipe(task, root=args.root)
        labeller = Labeller(task, recipe.root) if args.dry_run else Labeller.prepare(task, recipe.root)
        out = args.out or f"shards/{task.name}"
    else:
        recipe = load_recipe(args.dataset, args.overrides, root=args.root)
        out = args.out or f"shards/{recipe.name}"
    if args.dry_run:
        return _dry_run(recipe, None if labeller is None else labeller.task, args)
    manifest = run_shards(
        recipe,
        out,
        workers=args.workers,
        num_tasks=args.num_tasks,
        task_index=args.task_index,
        shard_bytes=int(args.shard_mb * 1024 * 1024),
        progress=not args.no_progress,
        labeller=labeller,
    )
    if args.num_tasks == 1:
        _print_summary(manifest, out)
    else:
        print(f"task {args.task_index} of {args.num_tasks} done; when all are, run: eegfm merge --out {out}")
    return 0


def _dry_run(recipe, task, args: argparse.Namespace) -> int:
    """`eegfm shards --dry-run`: the report from the headers; exit 1 when nothing would be written."""
    import json

    from eegfm.ingest.dryrun import dry_run, format_report

    report = dry_run(recipe, task=task, shard_bytes=int(args.shard_mb * 1024 * 1024))
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    if report["nothing_written"]:
        print(
            f"eegfm shards --dry-run: nothing would be written: {report['nothing_written']}", file=sys.stderr
        )
        return 1
    return 0


def _merge(args: argparse.Namespace) -> int:
    from eegfm.ingest.manifest import merge

    _print_summary(merge(args.out), args.out)
    return 0


def _print_summary(manifest: dict, out: str) -> None:
    from eegfm.ingest import contract

    t = manifest["totals"]
    print(
        f"{manifest['dataset']}: {t['files']['written']} files written, {t['files']['skipped']} skipped; "
        f"{t['samples']} samples, {t['hours']:.2f} h of EEG, {t['subjects']} subjects, "
        f"{len(manifest['shards'])} shards"
    )
    for reason, count in t["skip_reasons"].items():
        print(f"  skipped {count:5d}: {reason}")
    if "classes" in manifest:
        for split, counts in manifest["class_counts"].items():
            print(f"  {split:5s} " + ", ".join(f"{name} {n}" for name, n in counts.items()))
        for reason, count in t.get("unlabelled_reasons", {}).items():
            print(f"  unlabelled {count:5d}: {reason}")
    print(f"shards:   {out}")
    print(f"manifest: {join_url(out, contract.MANIFEST_NAME)}")
    print(f"report:   {join_url(out, contract.REPORT_NAME)}")


def _tasks(args: argparse.Namespace) -> int:
    from eegfm.ingest.tasks import available_tasks, load_task

    for name in available_tasks():
        task = load_task(name)
        print(
            f"{task.name:12s} dataset {task.dataset}, labels {task.labels.source}, "
            f"{task.windows.length_s:g}-s windows ({task.windows.mode}): {', '.join(task.classes)}"
        )
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from eegfm.ingest.catalogue import catalogue, catalogue_json, catalogue_table

    rows = catalogue()
    print(catalogue_json(rows) if args.json else catalogue_table(rows))
    return 0


def _fixtures(args: argparse.Namespace) -> int:
    from eegfm.ingest.fixtures import generate_corpus

    if args.task:
        from eegfm.ingest.task_fixtures import generate_task_corpus

        made = generate_task_corpus(
            args.recipe, args.dir, seed=args.seed, n_subjects=args.subjects, duration_s=args.duration
        )
        print(f"wrote {len(made)} files of a labelled {args.recipe} corpus under {args.dir}")
        return 0
    paths = generate_corpus(
        args.recipe, args.dir, seed=args.seed, n_subjects=args.subjects, duration_s=args.duration
    )
    print(f"wrote {len(paths)} files of a {args.recipe}-like corpus under {args.dir}")
    return 0


DEMO_PARTS = ("corpus", "shards", "run", "encoder", "tuab", "tuab-shards")


def _start_over_if_the_demo_changed(args: argparse.Namespace, recipe: dict, pretrain: dict) -> None:
    """The demo owns its folder: when what it would make there changed (another eegfm, other options),
    it says so and starts over instead of refusing to resume into a different run."""
    import hashlib
    import json
    import shutil

    settings = {"args": {k: getattr(args, k) for k in ("subjects", "duration", "steps")}, "recipe": recipe}
    settings["pretrain"] = pretrain
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    stamp = Path(args.out) / "demo-settings.sha256"
    if stamp.exists() and stamp.read_text().strip() != digest:
        print(f"demo:     {args.out} was made with other demo settings; starting it over")
        for name in DEMO_PARTS:
            shutil.rmtree(Path(args.out) / name, ignore_errors=True)
    elif not stamp.exists() and (Path(args.out) / "shards").exists():
        print(f"demo:     {args.out} predates the demo's settings stamp; starting it over")
        for name in DEMO_PARTS:
            shutil.rmtree(Path(args.out) / name, ignore_errors=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")


def _demo(args: argparse.Namespace) -> int:
    """The embedded default, end to end: a generated TUEG-like corpus → shards → a short MAE pretraining
    on the CPU → a checkpoint → the exported encoder; says where each is. Run again, it resumes."""
    from eegfm.config import CONFIG_DIR, to_container
    from eegfm.ingest.fixtures import generate_corpus
    from eegfm.ingest.recipe import load_recipe, recipe_as_dict
    from eegfm.ingest.run import run_shards
    from eegfm.ingest.task_fixtures import generate_task_corpus
    from eegfm.ingest.tasks import Labeller, dataset_recipe, load_task
    from eegfm.pretrain.checkpoints import latest_checkpoint
    from eegfm.pretrain.config import load_pretrain_config
    from eegfm.pretrain.export import encoder_from_checkpoint, export_encoder
    from eegfm.pretrain.probe import ProbeOptions, format_table, run_probe
    from eegfm.pretrain.probe_watch import watch
    from eegfm.pretrain.train import run_pretraining

    corpus, out, run, encoder, task_corpus, task_out = (
        str(Path(args.out) / name) for name in ("corpus", "shards", "run", "encoder", "tuab", "tuab-shards")
    )
    # One of the 4 subjects held out (by its hash: the demo's 4 subjects put none in val at 5 %).
    recipe = load_recipe("tueg", ["splits.train=0.75", "splits.val=0.25", "splits.test=0.0"], root=corpus)
    cfg = load_pretrain_config(
        CONFIG_DIR / "pretrain" / "reve_tiny.yaml",
        [
            f"data.shards=[{out}]",
            f"run.dir={run}",
            f"trainer.max_steps={args.steps}",
            "logging.progress_bar=true",
            "eval.every_n_steps=20",  # val_loss on the held-out subject, printed and in metrics.csv
        ],
    )
    _start_over_if_the_demo_changed(args, recipe_as_dict(recipe), to_container(cfg))
    made = generate_corpus("tueg", corpus, seed=0, n_subjects=args.subjects, duration_s=args.duration)
    print(f"corpus:   {corpus} ({len(made)} TUEG-like EDF files with TUH's layout, labels and header quirks)")
    manifest = run_shards(recipe, out, workers=args.workers, shard_bytes=1024 * 1024, progress=True)
    _print_summary(manifest, out)
    run_pretraining(cfg, resume="auto")
    checkpoint = latest_checkpoint(run)
    export_encoder(encoder_from_checkpoint(checkpoint), encoder)
    print(f"run:        {run} (config.yaml, metrics.csv, tensorboard/)")
    print(f"checkpoint: {checkpoint}")
    print(f"encoder:    {encoder} (model.safetensors + config.json; loads into braindecode's REVE)")
    # Is the encoder any good? A frozen-encoder probe on a labelled task (TUAB-like normal/abnormal).
    # 16 subjects, 8 of them in official train, half of those carved into val (TUAB's 10 % would put none).
    task = load_task("tuab", ["splits.val_fraction=0.5"])
    generate_task_corpus("tuab", task_corpus, seed=0, n_subjects=16, duration_s=60.0)
    task_recipe = dataset_recipe(task, root=task_corpus)
    labeller = Labeller.prepare(task, task_recipe.root)
    run_shards(task_recipe, task_out, workers=args.workers, progress=False, labeller=labeller)
    report = run_probe(run, task_out, None, ProbeOptions(shuffles=5))
    print(f"probe:      {report['out']}/probe.json (test split, frozen encoder vs baselines)")
    print(format_table(report))
    watch(run, [task_out], ProbeOptions(shuffles=5), once=True, say=lambda line: None)
    print(f"plot:       {run}/eval/probes.png (every checkpoint's probe: `eegfm probe --watch` does this)")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from eegfm.config import documented_yaml
    from eegfm.pretrain.checkpoints import latest_checkpoint
    from eegfm.pretrain.train import resolve_config, run_pretraining

    cfg = resolve_config(args.config, args.overrides, args.resume)
    if args.print_config:
        print(documented_yaml(cfg), end="")
        return 0
    trainer = run_pretraining(cfg, resume=args.resume, reset_stream=args.reset_stream)
    if trainer.is_global_zero:
        print(f"run:        {cfg.run.dir} (config.yaml, metrics.csv)")
        print(f"checkpoint: {latest_checkpoint(cfg.run.dir)}")
    return 0


def _params(args: argparse.Namespace) -> int:
    import torch

    from eegfm.models.reve import count_parameters
    from eegfm.pretrain.config import load_pretrain_config
    from eegfm.pretrain.train import build_module

    with torch.device("meta"):  # count without allocating
        module = build_module(load_pretrain_config(args.config, args.overrides), shape_only=True)
    print(f"whole model: {count_parameters(module):,} parameters")
    for label, count in getattr(module, "published_counts", dict)().items():
        print(f"{label}: {count:,}")
    print(f"encoder: {count_parameters(module.model.encoder):,}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from eegfm.pretrain.checkpoints import latest_checkpoint
    from eegfm.pretrain.export import encoder_from_checkpoint, export_encoder

    checkpoint = latest_checkpoint(args.checkpoint)
    if checkpoint is None:
        raise DataError(f"no complete checkpoint at {args.checkpoint}")
    for note in export_encoder(encoder_from_checkpoint(checkpoint), args.out):
        print(note)
    print(f"exported the encoder of {checkpoint} to {args.out} (model.safetensors, config.json)")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from eegfm.pretrain.tokenize import tokenize_dataset

    summary = tokenize_dataset(
        args.checkpoint, args.shards, batch_windows=args.batch_windows, progress=not args.no_progress
    )
    print(
        f"tokenizer {summary['tokenizer']} ({summary['checkpoint']}): {summary['windows']} windows in "
        f"{summary['shards']} shards tokenized in {summary['seconds']} s; "
        f"{summary['already_done']} shards were done already"
    )
    print(f"token shards: beside the shards in {args.shards} (*.tokens-{summary['tokenizer']}.tar)")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from eegfm.config import typed
    from eegfm.pretrain.probe import ProbeOptions, format_table, run_probe

    options = typed(ProbeOptions, {}, args.overrides, source="eegfm probe")
    if args.watch:
        from eegfm.pretrain.probe_watch import watch

        probes = watch(args.watch, args.task_shards, options, poll_s=args.poll, once=args.once)
        print(f"{probes} checkpoint probes; {join_url(args.watch, 'eval', 'probes.csv')}")
        return 0
    if args.checkpoint is None or len(args.task_shards) != 1:
        raise ConfigError("eegfm probe: give --checkpoint and one --task-shards (or --watch RUN)")
    report = run_probe(args.checkpoint, args.task_shards[0], args.out, options)
    print(f"probe.json: {join_url(report['out'], 'probe.json')}")
    print(format_table(report))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from eegfm.config import documented_yaml
    from eegfm.pretrain.finetune_run import REPORT_NAME, format_summary, resolve_finetune_config, run_finetune

    flags = {
        "encoder.checkpoint": args.checkpoint,
        "task.shards": args.task_shards,
        "mode": args.mode,
        "seeds": None if args.seeds is None else _seed_list(args.seeds),
    }
    cfg = resolve_finetune_config(args.config, flags, args.overrides, args.resume)
    if args.print_config:
        print(documented_yaml(cfg), end="")
        return 0
    report = run_finetune(cfg, resume=args.resume)
    if report is None:
        print(f"stopped by a signal; continue with: eegfm finetune --resume auto run.dir={cfg.run.dir}")
        return 0
    print(f"finetune.json: {join_url(cfg.run.dir, REPORT_NAME)}")
    print(format_summary(report))
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: comma-separated integers, e.g. --seeds 0,1,2") from None


def _submit(args: argparse.Namespace) -> int:
    from eegfm.launch import k8s, slurm

    cfg = slurm.load_launch_config(args.config, args.overrides)
    if args.scheduler == "slurm":
        if args.ingest:
            array, merge = slurm.render_ingest(
                cfg, slurm.pending_partitions(slurm.ingest_out(cfg), cfg.ingest.tasks)
            )
            if args.dry_run:
                print(array + "\n# --- then, with --dependency=afterok:<array job> ---\n" + merge, end="")
                return 0
            jobs = slurm.submit_ingest(cfg)
            array_job, merge_job = jobs.get("array"), jobs.get("merge")
            print(f"ingest partitions {jobs['partitions']}: array job {array_job}, merge job {merge_job}")
            return 0
        if args.dry_run:
            print(slurm.render_pretrain(cfg, args.config), end="")
            return 0
        job = slurm.submit_pretrain(cfg, args.config)
        print(f"submitted SLURM job {job['job']}; its script: {job['script']}")
        return 0
    manifests = k8s.render_ingest(cfg) if args.ingest else [k8s.render_pretrain(cfg)]
    for manifest in manifests:
        k8s.validate(manifest)
    if args.dry_run:
        print(k8s.to_yaml(manifests), end="")
        return 0
    k8s.apply(manifests, wait_for_first=args.ingest)
    print(f"applied {', '.join(m['kind'] + '/' + m['metadata']['name'] for m in manifests)}")
    return 0


def _simulate_stream(args: argparse.Namespace) -> int:
    import json

    from eegfm.pretrain.config import DataConfig
    from eegfm.pretrain.simulate import simulate_stream

    figures = simulate_stream(
        args.hours,
        args.gpus,
        args.nodes,
        windows_per_s_per_gpu=args.windows_per_s_per_gpu,
        block=DataConfig.shuffle_block if args.shuffle_block is None else args.shuffle_block,
        budget=DataConfig.channel_budget if args.channel_budget is None else args.channel_budget,
    )
    if args.json:
        print(json.dumps(figures, indent=1, default=float))
        return 0
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        print(f"{key:36s} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eegfm", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("shards", help="ingest a corpus into WebDataset shards")
    p.add_argument("--dataset", help="a recipe under configs/datasets/ (or a YAML path)")
    p.add_argument("--task", help="a task under configs/tasks/ (or a YAML path): labelled shards")
    p.add_argument("--root", help="where the corpus is (local path or s3://…); default: the recipe's root")
    p.add_argument("--out", help="output folder or URL; default shards/<dataset>")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine")
    p.add_argument("--num-tasks", type=int, default=1, help="partitions of the corpus (array jobs)")
    p.add_argument("--task-index", type=int, default=0, help="which partition this process ingests")
    p.add_argument("--shard-mb", type=float, default=256, help="target shard size in MiB")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read headers only: report what would be written, write nothing",
    )
    p.add_argument("--json", action="store_true", help="--dry-run: the report as one JSON object")
    p.add_argument(
        "overrides",
        nargs="*",
        help="recipe or task overrides, key=value (e.g. preprocess.window_s=5, windows.stride_s=2)",
    )
    p.set_defaults(func=_shards)

    p = verbs.add_parser("tasks", help="list the task recipes: dataset, label source, windows, classes")
    p.set_defaults(func=_tasks)

    p = verbs.add_parser("recipes", help="list the dataset recipes: format, hours, subjects, licence, root")
    p.add_argument("--json", action="store_true", help="one JSON object per recipe, for scripts")
    p.set_defaults(func=_recipes)

    p = verbs.add_parser("merge", help="write manifest.json (and the QC report) from finished task manifests")
    p.add_argument("--out", required=True, help="the output folder or URL the tasks wrote to")
    p.set_defaults(func=_merge)

    p = verbs.add_parser("fixtures", help="generate a small corpus with a recipe's layout and quirks")
    p.add_argument("recipe", help="a dataset recipe's name (with --task: a task's name)")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per recording")
    p.add_argument("--task", action="store_true", help="a task's labelled corpus, with its label files")
    p.set_defaults(func=_fixtures)

    p = verbs.add_parser("pretrain", help="pretrain on shards as a config says (Lightning; multi-node)")
    p.add_argument(
        "--config", help="configs/pretrain/<name>.yaml (a resume takes the run's saved config.yaml instead)"
    )
    p.add_argument("--resume", help="'auto' (the run's newest complete checkpoint, if any), or a checkpoint")
    p.add_argument(
        "--reset-stream",
        action="store_true",
        help="resume although the data stream changed: continue from the next epoch boundary",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved, typed config and stop")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. trainer.max_steps=100)")
    p.set_defaults(func=_pretrain)

    p = verbs.add_parser("params", help="parameter counts of a pretraining config's model (encoder last)")
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_params)

    p = verbs.add_parser("export", help="a checkpoint's encoder as model.safetensors + config.json")
    p.add_argument("--checkpoint", required=True, help="a .ckpt file, or a run directory (its newest)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_export)

    p = verbs.add_parser("tokenize", help="code ids of every window, beside the shards (resumable)")
    p.add_argument("--checkpoint", required=True, help="a stage-1 tokenizer checkpoint, or its run directory")
    p.add_argument("--shards", required=True, help="a shard folder or manifest URL (local or s3://)")
    p.add_argument("--batch-windows", type=int, default=256, help="windows tokenized together")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_tokenize)

    p = verbs.add_parser("probe", help="frozen-encoder probe of a checkpoint on labelled task shards")
    p.add_argument("--checkpoint", help="a run directory (its newest), a .ckpt, or an export")
    p.add_argument(
        "--task-shards",
        required=True,
        action="append",
        help="labelled task shards: a folder or manifest URL (repeat it with --watch for several tasks)",
    )
    p.add_argument("--out", help="where probe.json goes; default <run>/probe/<task>/step=N")
    p.add_argument("--watch", metavar="RUN", help="probe each checkpoint of RUN as it appears, once each")
    p.add_argument("--poll", type=float, default=60.0, help="--watch: seconds between looks at RUN")
    p.add_argument("--once", action="store_true", help="--watch: probe what is there now, then stop")
    p.add_argument("overrides", nargs="*", help="probe options, key=value (pooling=attention layers=all …)")
    p.set_defaults(func=_probe)

    p = verbs.add_parser(
        "finetune", help="fine-tune a pretrained encoder on labelled task shards (lp, ft, lp+ft)"
    )
    p.add_argument("--config", help="configs/finetune/<name>.yaml (default: configs/finetune/base.yaml)")
    p.add_argument("--checkpoint", help="the encoder: a run directory (its newest), a .ckpt, or an export")
    p.add_argument("--task-shards", help="labelled task shards: a folder or manifest URL")
    p.add_argument("--mode", help="lp (frozen encoder), ft (full, layer-wise lr decay) or lp+ft")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (mean ± std in finetune.json)")
    p.add_argument("--resume", help="'auto': continue the run in run.dir from its newest checkpoints")
    p.add_argument("--print-config", action="store_true", help="print the resolved, typed config and stop")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. ft.layer_decay=0.65)")
    p.set_defaults(func=_finetune)

    p = verbs.add_parser(
        "submit", help="render a SLURM or Kubernetes job from a launch config, and submit it"
    )
    p.add_argument("scheduler", choices=["slurm", "k8s"])
    p.add_argument("--config", required=True, help="configs/launch/<name>.yaml")
    p.add_argument("--ingest", action="store_true", help="the config's ingest job (partitions + merge)")
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted, submit nothing")
    p.add_argument("overrides", nargs="*", help="launch-config overrides, key=value")
    p.set_defaults(func=_submit)

    p = verbs.add_parser(
        "simulate-stream", help="the epoch plan on a synthetic REVE-like table: cost, reads, mixing"
    )
    p.add_argument("--hours", type=float, default=60000.0, help="hours of EEG in the synthetic table")
    p.add_argument("--gpus", type=int, default=32, help="GPUs of the job (all nodes)")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--windows-per-s-per-gpu", type=float, default=7400.0, help="training rate per GPU")
    p.add_argument("--shuffle-block", type=int, help="shards per block (0: global; default: data.*'s)")
    p.add_argument("--channel-budget", type=int, help="channel-windows per micro-batch (default: data.*'s)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of aligned lines")
    p.set_defaults(func=_simulate_stream)

    p = verbs.add_parser("demo", help="end to end on an embedded default corpus")
    p.add_argument("--out", default="shards/demo")
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--duration", type=float, default=120.0, help="seconds per recording")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=60, help="pretraining steps (reve_tiny on the CPU)")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow the flags (argparse stops filling a positional list at a flag)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except EegfmError as e:
        # Bad input, configuration or storage: one line that says what and where. Anything else (a bug, a
        # torch or NCCL failure) is not caught here and keeps its traceback.
        print(f"eegfm {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
