"""The KT ablation's bookkeeping on a tiny trained run: every cell, seeds, intervals, and a 0-prior
control that really has no prior token."""
import shutil

import numpy as np
import pytest
import torch

from ktedge.atomic import read_json
from ktedge.benchmarks.bootstrap import paired_interval
from ktedge.benchmarks.kt_ablation import (ALL, ALL_SHUFFLED, CONTROL, SHUFFLED, _embeddings, main, plan_cells,
                                           run_ablation)
from ktedge.benchmarks.kt_ablation_report import ablation_section, ablation_summary
from ktedge.model.ablation import CellModel, Embeddings, collapsed, per_face, train_cells
from ktedge.model.adapter import drop_mask
from ktedge.model.checkpoint import load_checkpoint
from ktedge.model.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")  # as the ablation's workers train

SEEDS, EPOCHS = 3, 1
PRIORS = ["face", "age", "attributes"]  # the default run's priors, by task
MASK_CELLS = {"mask:no-drop", "mask:p_drop=0.25", "mask:p_drop=0.75", "mask:p_all=0", "mask:p_canon=0.25",
              "mask:p_canon=0.5"}  # p_drop=0.5 is the default: that cell is priors:all


@pytest.fixture(scope="module")
def ablation(tiny_run, tmp_path_factory):
    src, metrics = tiny_run
    out = tmp_path_factory.mktemp("kt_ablation")
    shutil.copytree(src / "train", out / "train")
    result = run_ablation(out, "full", seeds=SEEDS, epochs=EPOCHS, workers=1, resamples=300)
    return out, result, metrics


def _cache(out):
    c = torch.load(out / "bench" / "kt_ablation_cache.pt", weights_only=True)
    return c, Embeddings(c["train"], c["val"], c["y_train"], c["y_val"])


def test_every_cell_with_its_seeds_and_intervals(ablation):
    out, result, _ = ablation
    assert read_json(out / "bench" / "kt_ablation.json") == result
    assert set(result["tasks"]) == {"landmarks", "age", "attributes"}
    subsets = {"priors:" + "+".join(s) for s in (["face"], ["age"], ["attributes"], ["face", "age"],
                                                  ["face", "attributes"], ["age", "attributes"])}
    lm = result["tasks"]["landmarks"]
    assert set(lm["cells"]) == {CONTROL, ALL, ALL_SHUFFLED, *subsets, *MASK_CELLS}
    assert lm["cells"][ALL_SHUFFLED]["priors"] == [SHUFFLED + p for p in PRIORS]
    assert lm["headline"]["deploy_vs_shuffled"] == lm["cells"][ALL]["vs_shuffled"]
    assert lm["cells"][ALL]["vs_shuffled"]["difference"] == "deploy - shuffled priors"
    for task in ("age", "attributes"):  # each prior with labels as the canonical encoder
        others = [k for k in ("landmarks", *PRIORS) if k != task]
        assert set(result["tasks"][task]["cells"]) == {CONTROL, ALL}
        assert result["tasks"][task]["priors"] == others == result["tasks"][task]["cells"][ALL]["priors"]
        assert "fresh decoder" in result["tasks"][task]["canonical_alone"]["how"]
    for task, t in result["tasks"].items():
        for key, c in t["cells"].items():
            assert len(c["seeds"]) >= SEEDS and len(c["deploy"]["per_seed"]) == len(c["seeds"]), (task, key)
            assert not set(c["seeds"]) & set(c["collapsed_seeds"])
            trained = c["deploy_every_training"]["per_seed"]
            assert len(trained) == len(set(c["seeds"]) | set(c["collapsed_seeds"]))
            assert c["deploy"]["mean"] == pytest.approx(np.mean(c["deploy"]["per_seed"]))
            assert c["deploy"]["sd"] > 0, (task, key)  # seeds really differ
            intervals = [c["vs_canonical"], c["vs_control"], c["ensemble_vs_control"], c.get("vs_shuffled")]
            assert (c["vs_control"] is None) == (key == CONTROL)
            assert (c["ensemble_vs_control"] is None) == (key == CONTROL)
            for iv in filter(None, intervals):
                assert iv["lo"] <= iv["hi"] and iv["faces"] == result["held_out"]["faces"]
                assert iv["significant"] == (iv["lo"] > 0 or iv["hi"] < 0)
                assert iv["better"] == ("lower" if t["lower_is_better"] else "higher")
                assert (iv["favours"] is None) == (not iv["significant"])
        h = t["headline"]
        assert h["deploy_vs_control"] == t["cells"][ALL]["vs_control"]
        for arm, key in (("control", CONTROL), ("kt_deploy", ALL)):
            c = t["cells"][key]
            assert h["collapsed"][arm] == [len(c["collapsed_seeds"]), len(c["deploy_every_training"]["per_seed"])]
        assert h["beats_control"] == (h["deploy_vs_control"]["favours"] == "deploy")
    assert result["held_out"]["split"] == "val" and result["wall_s"]["total"] > 0


def test_control_has_no_prior_token(ablation):
    out, result, _ = ablation
    for t in result["tasks"].values():
        for key, c in t["cells"].items():
            assert c["prior_tokens"] == len(c["priors"]), key
            if key == CONTROL:
                assert c["priors"] == [] and c["prior_influence"] == 0.0 and c.get("ensemble") is None
            else:
                assert c["prior_influence"] > 0, key  # the prior tokens do reach the adapter's output
    # The control retrained here: no prior projection, and its output ignores any prior embedding.
    model, cfg = load_checkpoint(out / "train" / "checkpoint.pt")
    _, emb = _cache(out)
    control = next(c for c in plan_cells(cfg, emb, "headline")["landmarks"] if c.key == CONTROL)
    (m,) = train_cells(cfg, "landmarks", emb, [(control, 0)], model.baseline_decoder, 1)
    assert len(m.adapter.priors) == 0
    e_c = emb.val["landmarks"][:16]
    noise = [torch.randn(16, emb.val[p].shape[1]) * 10 for p in PRIORS]
    assert (m.adapter.out.weight != 0).any()  # trained: the adapter does change e_c
    with torch.no_grad():
        assert torch.equal(m.decode(e_c, noise), m.decode(e_c))
        # the training step's attention sees [t_k, t_c] only: a 2-token key mask, priors ignored
        assert torch.allclose(m(e_c, noise, torch.ones(16, 2, dtype=torch.bool)), m.decode(e_c), atol=1e-5)


def test_cache_is_the_runs_embeddings(ablation):
    out, result, metrics = ablation
    cache, emb = _cache(out)
    assert cache["split"] == "val" and len(emb.val["landmarks"]) == metrics["held_out_faces"]
    # Canonical alone from the cached embeddings is the figure training reported on the same faces.
    reported = metrics["canonical_alone"]["nme"]
    assert result["tasks"]["landmarks"]["canonical_alone"]["nme"] == pytest.approx(reported, rel=1e-5)
    model, _ = load_checkpoint(out / "train" / "checkpoint.pt")
    with torch.no_grad():
        pred = model.baseline_decoder(emb.val["landmarks"])
    per = per_face("landmarks", pred, emb.y_val["landmarks"])
    assert per.shape == (len(pred),)
    assert per.mean() == pytest.approx(TASKS["landmarks"].metric(pred.numpy(), emb.y_val["landmarks"].numpy()))
    shuffled = _embeddings(cache)  # what the cells train on: + each encoder's rows permuted across faces
    for split in (shuffled.train, shuffled.val):
        for key in ("face", "age"):
            a, b = split[key], split[SHUFFLED + key]
            assert not torch.equal(a, b) and torch.equal(a[torch.argsort(a[:, 0])], b[torch.argsort(b[:, 0])])
    for task, key in (("age", "age"), ("attributes", "attributes")):  # per-face values average to the metric
        y = emb.y_val[task]
        pred = torch.randn(len(y), *y.shape[1:]) * 5 + (y if task == "age" else 0)
        assert per_face(task, pred, y).mean() == pytest.approx(TASKS[task].metric(pred.numpy(), y.numpy()))


def test_a_changed_checkpoint_recomputes_the_cache(ablation, tmp_path):
    out, result, _ = ablation
    run = tmp_path / "run"
    shutil.copytree(out / "train", run / "train")
    cache, _ = _cache(out)
    (run / "bench").mkdir()
    torch.save({**cache, "checkpoint_sha256": "0" * 64, "val": {k: v * 0 for k, v in cache["val"].items()}},
               run / "bench" / "kt_ablation_cache.pt")
    assert main(["--out", str(run), "--plan", "headline", "--seeds", "2", "--epochs", "1", "--resamples", "100",
                 "--workers", "2"]) == 0
    again = read_json(run / "bench" / "kt_ablation.json")
    assert again["plan"] == "headline" and set(again["tasks"]) == {"landmarks"} and again["workers"] == 2
    assert set(again["tasks"]["landmarks"]["cells"]) == {CONTROL, ALL}
    assert again["tasks"]["landmarks"]["canonical_alone"] == result["tasks"]["landmarks"]["canonical_alone"]
    assert _cache(run)[0]["checkpoint_sha256"] == result["checkpoint_sha256"]


def test_report_section_and_plot(ablation):
    out, result, _ = ablation
    md = ablation_section(out)
    assert md.startswith("## Does the knowledge token carry the priors' knowledge?")
    assert "0-prior control" in md and "![KT ablation](report/kt_ablation.png)" in md
    assert result["tasks"]["landmarks"]["headline"]["verdict"] in md
    for task in result["tasks"]:
        assert f"### {task}" in md
    assert (out / "report" / "kt_ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ablation_section(out / "nowhere") is None and ablation_summary(out / "nowhere") is None
    summary = ablation_summary(out)
    head = summary["tasks"]["landmarks"]
    assert head["deploy_vs_control"] == result["tasks"]["landmarks"]["cells"][ALL]["vs_control"]
    assert head["canonical_alone"] == result["tasks"]["landmarks"]["canonical_alone"]["nme"]


def test_training_step_is_the_adapter(tiny_cfg):
    """The ablation's training step (only the knowledge token's row) is KTAdapter.forward."""
    from dataclasses import replace

    from ktedge.model.tasks import TASKS as T

    for layers in (1, 2):
        a = replace(tiny_cfg.model.adapter, layers=layers)
        m = CellModel(32, [48, 16], a, T["landmarks"].head(32, 64))
        torch.nn.init.normal_(m.adapter.out.weight, std=0.2)  # zero at init: make the adapter matter
        e_c, e_p = torch.randn(40, 32), [torch.randn(40, 48), torch.randn(40, 16)]
        mask = drop_mask(40, 2, 0.5, 0.25, 0.3, torch.Generator().manual_seed(layers))
        with torch.no_grad():
            full = m.decoder(m.adapter(e_c, e_p, mask))
            assert (full - m.decoder(e_c)).abs().max() > 1e-2
            assert torch.allclose(m(e_c, e_p, mask), full, atol=1e-5)


def test_collapse_is_a_constant_output(ablation):
    out, _, _ = ablation
    model, _ = load_checkpoint(out / "train" / "checkpoint.pt")
    _, emb = _cache(out)
    y = emb.y_val["landmarks"]
    with torch.no_grad():
        pred = model.baseline_decoder(emb.val["landmarks"])
    assert not collapsed(pred, y)
    assert collapsed(pred.mean(0, keepdim=True).expand_as(pred) + 1e-4 * torch.randn_like(pred), y)


def test_paired_interval():
    rng = np.random.default_rng(0)
    b = rng.gamma(2.0, 3.0, size=(5, 400))  # per-face errors of 5 seeds
    same = paired_interval(b, b, True, ("a", "b"))
    assert same["lo"] <= 0 <= same["hi"] and not same["significant"] and same["favours"] is None
    better = paired_interval(b - 0.5, b, True, ("a", "b"))  # every face 0.5 lower: a is better
    assert better["significant"] and better["favours"] == "a" and better["hi"] < 0
    assert better["mean"] == pytest.approx(-0.5)
    assert paired_interval(b - 0.5, b, False, ("a", "b"))["favours"] == "b"  # higher is better
    noisy = paired_interval(b + rng.normal(0, 20, b.shape), b, True, ("a", "b"))
    assert noisy["hi"] - noisy["lo"] > better["hi"] - better["lo"]
