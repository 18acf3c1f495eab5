"""The KT ablation in the run's report: a Markdown section and a plot, from bench/kt_ablation.json
alone (benchmarks/kt_ablation.py writes it)."""
from __future__ import annotations

from pathlib import Path

from ktedge.atomic import atomic_path, read_json, sha256_file


def _ms(s: dict | None, seeds: int = 0) -> str:
    """mean ± sd over seeds, and how many where fewer than `seeds` trainings converged."""
    if s is None:
        return "-"
    n = len(s["per_seed"])
    return f"{s['mean']:.3f} ± {s['sd']:.3f}" + (f" (only {n} converged)" if n < seeds else "")


def _ci(iv: dict | None) -> str:
    if iv is None:
        return "-"
    mark = " **significant**" if iv["significant"] else ""
    return f"{iv['mean']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]{mark}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _mask(c: dict) -> str:
    return f"{c['p_drop']:g} / {c['p_all']:g} / {c['p_canon']:g}"


def headline_lines(result: dict) -> list[str]:
    """The headline in a few plain lines, for the script's output: canonical task first."""
    task, t = next(iter(result["tasks"].items()))
    h, m, n = t["headline"], t["metric"], result["seeds_per_cell"]
    return [f"{task} (held-out {m}, {result['held_out']['faces']} {result['held_out']['split']} faces, "
            f"{result['seeds_per_cell']} seeds a cell, {'lower' if t['lower_is_better'] else 'higher'} is better):",
            f"  canonical alone   {h['canonical_alone']:.3f}",
            f"  0-prior control   {_ms(h['control'], n)}   vs canonical {_ci(h['control_vs_canonical'])}",
            f"  KT deploy         {_ms(h['kt_deploy'], n)}   vs canonical {_ci(h['deploy_vs_canonical'])}   "
            f"vs control {_ci(h['deploy_vs_control'])}",
            f"  ensemble          {_ms(h['ensemble'])}   vs control {_ci(h['ensemble_vs_control'])}",
            f"  -> {h['verdict']}",
            "  collapsed trainings: 0-prior control {} of {}, KT deploy {} of {}".format(*h["collapsed"]["control"],
                                                                                       *h["collapsed"]["kt_deploy"])]


def _collapse_lines(result: dict) -> list[str]:
    rows = [(task, key, len(c["collapsed_seeds"]), len(c["deploy_every_training"]["per_seed"]))
            for task, t in result["tasks"].items() for key, c in t["cells"].items() if c["collapsed_seeds"]]
    if not rows:
        return []
    return ["collapsed trainings (replaced by new seeds): "
            + ", ".join(f"{task} {key} {k} of {n}" for task, key, k, n in rows)]


def _headline_table(t: dict, n: int) -> str:
    h, m = t["headline"], t["metric"]
    collapsed = {k: "{} of {}".format(*v) for k, v in h["collapsed"].items()}
    rows = [["canonical encoder alone", f"{h['canonical_alone']:.3f}", "-", "-", "-"],
            ["0-prior control (adapter + d_c, same epochs, no prior token)", _ms(h["control"], n),
             _ci(h["control_vs_canonical"]), "-", collapsed["control"]],
            ["KT deploy {t_k, t_c} (trained with all priors)", _ms(h["kt_deploy"], n), _ci(h["deploy_vs_canonical"]),
             _ci(h["deploy_vs_control"]), collapsed["kt_deploy"]],
            ["ensemble (all prior encoders run)", _ms(h["ensemble"], n), "-", _ci(h["ensemble_vs_control"]), "-"]]
    return _table(["model", f"held-out {m} (mean ± sd over seeds)", "vs canonical alone: difference [95 % CI]",
                   "vs 0-prior control: difference [95 % CI]", "trainings collapsed"], rows)


def _cells_table(t: dict) -> str:
    rows = []
    for key, c in t["cells"].items():
        trained = len(c["deploy_every_training"]["per_seed"])
        rows.append([key, "+".join(c["priors"]) or "none", _mask(c),
                     f"{len(c['seeds'])} ({len(c['collapsed_seeds'])} of {trained} collapsed)",
                     _ms(c["deploy"]), _ci(c["vs_canonical"]), _ci(c["vs_control"]), _ms(c.get("ensemble"))])
    return _table(["cell", "prior tokens in training", "p_drop / p_all / p_canon", "seeds (trainings collapsed)",
                   f"deploy {t['metric']}",
                   "vs canonical alone [95 % CI]", "vs 0-prior control [95 % CI]", "ensemble"], rows)


def _plain(task: str, t: dict) -> str:
    """Where the knowledge token helps, in one sentence per task."""
    h = t["headline"]
    helped = [k for k, c in t["cells"].items() if c["vs_control"] and c["vs_control"]["favours"] == "deploy"]
    hurt = [k for k, c in t["cells"].items() if c["vs_control"] and c["vs_control"]["significant"]
            and c["vs_control"]["favours"] != "deploy"]
    s = f"**{task}**: {h['verdict']}."
    if helped:
        s += f" Cells that beat the control: {', '.join(helped)}."
    else:
        s += " No cell beats the control: on these faces the priors do not reach the deploy graph."
    if hurt:
        s += f" Worse than the control: {', '.join(hurt)}."
    compared = sum(c["vs_control"] is not None for c in t["cells"].values())
    if compared > 2 and helped:
        s += (f" ({compared} cells are compared with the control at 95 %: about {0.05 * compared:.1f} "
              "would come out significant by chance alone.)")
    shuffled = h.get("deploy_vs_shuffled")
    if shuffled:
        c = t["cells"]["priors:all-shuffled"]
        s += (f" With the priors' embeddings shuffled across faces (the same tokens, no knowledge of the face): "
              f"deploy {_ms(c['deploy'])}, real priors minus shuffled {_ci(shuffled)}; "
              f"{len(c['collapsed_seeds'])} of {len(c['deploy_every_training']['per_seed'])} trainings collapsed.")
    ens = h.get("ensemble_vs_control")
    if ens and ens["favours"] == "ensemble":
        s += (" With the prior encoders running (ensemble) the priors do help, so they carry knowledge the token "
              "does not keep.")
    return s


def ablation_section(out: Path) -> str | None:
    """The report's KT-ablation section (Markdown), or None where the run has no ablation."""
    out = Path(out)
    result = read_json(out / "bench" / "kt_ablation.json")
    if result is None:
        return None
    ckpt = out / "train" / "checkpoint.pt"
    stale = ckpt.is_file() and sha256_file(ckpt) != result["checkpoint_sha256"]
    ho, b = result["held_out"], result["bootstrap"]
    parts = ["## Does the knowledge token carry the priors' knowledge? (KT ablation)", ""]
    if stale:
        parts += ["**Stale**: this ablation was measured on an earlier checkpoint; re-run "
                  f"`python -m ktedge.benchmarks.kt_ablation --out {out}`.", ""]
    parts += [f"The adapter + d_c trained again on the run's frozen encoders' cached embeddings, "
              f"{result['adapter_epochs']} epochs per cell, {result['seeds_per_cell']} seeds per cell "
              f"({result['plan']} plan); "
              f"held out: the `{ho['split']}` split, {ho['faces']} faces ({ho['source']}). The 0-prior control is "
              "the same adapter trained the same epochs with no prior token: it separates the priors from "
              "more decoder training. Intervals: paired bootstrap over the held-out faces, seeds resampled "
              f"within each arm, {b['resamples']} resamples, 95 %; a difference is significant only where its "
              f"interval excludes 0. A training whose held-out output came out the same for every face "
              "(it diverged at the peak learning rate: every ReLU of d_c dead) is counted as collapsed and "
              "replaced by the cell's next seeds; the figures are of trainings that converged. "
              f"Whole ablation: {result['wall_s']['total']:.0f} s wall on {result['workers']} worker(s).", ""]
    collapses = _collapse_lines(result)
    if collapses:
        parts += ["**" + collapses[0].capitalize() + ".**", ""]
    for i, (task, t) in enumerate(result["tasks"].items()):
        better = "lower" if t["lower_is_better"] else "higher"
        parts += [f"### {task} ({t['metric']}, {better} is better; canonical: {t['canonical']}, "
                  f"priors: {', '.join(t['priors'])})", ""]
        if i:
            parts += [f"Canonical alone here is {t['canonical_alone']['how']}.", ""]
        parts += [_headline_table(t, result["seeds_per_cell"]), "", _plain(task, t), ""]
        if len(t["cells"]) > 2:
            parts += [_cells_table(t), ""]
    parts += ["![KT ablation](report/kt_ablation.png)", ""]
    return "\n".join(parts)


def ablation_summary(out: Path) -> dict | None:
    """The headline for summary.json: per task, canonical alone / 0-prior control / KT deploy and
    the two intervals; None where the run has no ablation."""
    result = read_json(Path(out) / "bench" / "kt_ablation.json")
    if result is None:
        return None
    keep = ("canonical_alone", "control", "kt_deploy", "ensemble", "deploy_vs_canonical", "deploy_vs_control",
            "beats_control", "verdict")
    return {"plan": result["plan"], "seeds_per_cell": result["seeds_per_cell"], "wall_s": result["wall_s"]["total"],
            "checkpoint_sha256": result["checkpoint_sha256"],
            "tasks": {task: {"metric": t["metric"], **{k: t["headline"][k] for k in keep}}
                      for task, t in result["tasks"].items()}}


def plot_ablation(result: dict, path: Path) -> None:
    """Per task: every cell's deploy metric (mean ± sd over seeds), the ensemble, and lines at the
    canonical-alone model and the 0-prior control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"].items())
    heights = [0.32 * len(t["cells"]) + 1.3 for _, t in tasks]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    colors = {"priors": "#1f77b4", "mask": "#ff7f0e"}
    for ax, (task, t) in zip(axes[:, 0], tasks):
        cells = list(t["cells"].items())
        y = list(range(len(cells)))
        for yi, (_, c) in zip(y, cells):
            ax.errorbar(c["deploy"]["mean"], yi, xerr=c["deploy"]["sd"], fmt="o", color=colors[c["group"]], capsize=3)
            if c.get("ensemble"):
                ax.plot(c["ensemble"]["mean"], yi, "x", color="#7f7f7f")
        ax.axvline(t["canonical_alone"][t["metric"]], color="#2ca02c", ls="--", label="canonical alone")
        ax.axvline(t["headline"]["control"]["mean"], color="#d62728", ls=":", label="0-prior control")
        ax.set_yticks(y, [k for k, _ in cells], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"held-out {t['metric']} ({'lower' if t['lower_is_better'] else 'higher'} is better); "
                      "dot: deploy mean ± sd, x: ensemble", fontsize=8)
        ax.set_title(f"{task}: canonical {t['canonical']}, {result['seeds_per_cell']} seeds a cell", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
