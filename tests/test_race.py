"""`atom race`: contestants train in their own processes, their evaluation lines become curves
against wall clock, the final checkpoints are measured, and nanoGPT's recipe runs beside them
from the folder given (measurement only)."""

from __future__ import annotations

import json
import math

import pytest

from atomlib.errors import AtomError
from atomlib.training.race import figure, format_table, parse_spec, race, race_or_skip, seconds_to
from conftest import ROOT

NANOGPT = ROOT.parent / "shared" / "anchors" / "nanogpt"
TINY = ("test:n_layer=2,n_head=2,n_embd=32,block_size=32,batch_size=4,max_iters=20,eval_interval=10,"
        "eval_iters=2,warmup_iters=2,log_interval=10")


def test_a_contestant_is_a_config_and_its_overrides():
    assert parse_spec("cpu") == ("cpu", {})
    assert parse_spec("cpu:optimizer=muon,matrix_lr=0.03,qk_norm=true") == \
        ("cpu", {"optimizer": "muon", "matrix_lr": 0.03, "qk_norm": True})
    with pytest.raises(AtomError, match="did you mean 'matrix_lr'"):
        parse_spec("cpu:matrix_rl=0.1")
    with pytest.raises(AtomError, match="names no config"):
        parse_spec(":max_iters=3")


def test_a_race_trains_measures_and_reports(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOM_PEAK_FLOPS", "1e11")
    out = tmp_path / "race"
    s = race([TINY, TINY + ",optimizer=muon,pos_emb=rope,norm=rmsnorm,mlp=relu2"], dataset=str(tiny_dataset),
             out_dir=out, target_bpc=6.0, progress=False)
    assert len(s["results"]) == 2
    for r in s["results"]:
        assert [p["step"] for p in r["points"]] == [0, 10, 20]
        assert all(a["seconds"] < b["seconds"] for a, b in zip(r["points"], r["points"][1:]))
        assert r["seconds"] >= r["points"][-1]["seconds"]
        assert all(p["val_bpc"] == pytest.approx(p["val_loss"] / math.log(2)) for p in r["points"])  # char: 1 per token
        assert r["final_bpc"] == pytest.approx(r["final_val_loss"] / math.log(2)) and math.isfinite(r["final_bpc"])
        assert 0 <= r["known_word_rate"] <= 1
        assert r["seconds_to_target"] == seconds_to(r, 6.0)
    saved = json.loads((out / "race.json").read_text())
    assert saved["results"][0]["label"] == TINY and (out / "race.png").stat().st_size > 1000
    assert saved["machine"]["cpu"] and saved["machine"]["threads"] >= 1
    table = format_table(saved)
    assert table.splitlines()[0].startswith("| contestant | time to 6.000 bpc (s)")
    assert len([line for line in table.splitlines() if line.startswith("| test:")]) == 2
    # each run in its own numbered folder with its log, beside the race's two files
    names = sorted(p.name for p in out.iterdir())
    assert names[-2:] == ["race.json", "race.png"] and len(names) == 6
    assert [n[:3] for n in names[:4]] == ["01-", "01-", "02-", "02-"] and names[1].endswith(".log")


def test_time_to_target_is_the_first_evaluation_at_or_below_it():
    r = {"points": [{"seconds": 1.0, "val_bpc": 5.0}, {"seconds": 2.0, "val_bpc": 3.0}, {"seconds": 3.0, "val_bpc": 2.9}]}
    assert seconds_to(r, 3.0) == 2.0 and seconds_to(r, 2.95) == 3.0 and seconds_to(r, 1.0) is None
    assert seconds_to(r, None) is None


@pytest.mark.skipif(not (NANOGPT / "train.py").is_file(), reason="no nanoGPT folder at ../shared/anchors/nanogpt")
def test_nanogpt_runs_beside_from_its_own_folder_on_the_same_split(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOM_PEAK_FLOPS", "1e11")
    s = race([TINY], dataset=str(tiny_dataset), nanogpt=NANOGPT, out_dir=tmp_path / "race", samples=False,
             nanogpt_set=["max_iters=20", "lr_decay_iters=20", "eval_interval=10", "warmup_iters=2"], progress=False)
    nano, ours = s["results"]
    assert nano["kind"] == "nanogpt" and "max_iters=20" in nano["label"]
    assert [p["step"] for p in nano["points"]] == [0, 10, 20]
    assert nano["points"][0]["val_loss"] > nano["points"][-1]["val_loss"]
    assert nano["final_val_loss"] is not None and math.isfinite(nano["final_bpc"])
    assert s["target_bpc"] == pytest.approx(nano["final_bpc"])  # the default goal: nanoGPT's final loss
    # its files were copied into the scratch folder and its data linked there; the source is untouched
    work = tmp_path / "race" / "nanogpt"
    assert (work / "train.py").read_bytes() == (NANOGPT / "train.py").read_bytes()
    assert (work / "data" / "race" / "train.bin").resolve() == (tiny_dataset / "train.bin").resolve()
    assert ours["final_bpc"] is not None and ours["known_word_rate"] is None  # samples=False


def test_race_errors_are_one_sentence(tiny_dataset, tmp_path, capsys):
    from atomlib.cli import main

    assert main(["race", "--nanogpt", str(tmp_path), "--dataset", str(tiny_dataset), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks model.py" in err[0]
    assert main(["race", "--out", str(tmp_path / "o")]) == 2
    assert "at least one contestant" in capsys.readouterr().err


def test_a_race_switched_off_by_its_parameters_is_none_and_says_so():
    assert race_or_skip([], nanogpt=None) is None
    assert figure(None) is None
    assert format_table(None).startswith("No race was run")
