"""The conventions side by side, by hand, and what-if pricing from stated rates (`energy price`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from svformer_deploy.energy.conventions import (
    dense_model_counts,
    expected_counts,
    layer_table,
    measure_rates,
    price_conventions,
)
from svformer_deploy.energy.counter import count_ops
from svformer_deploy.models import create_model, record_spikes
from svformer_deploy.models.neurons import PLIF
from tests.helpers import run_cli

# per-layer rates of the trained SVFormer as printed by the official repository's energy run (test1x1.log)
RATES = Path(__file__).parent / "data" / "svformer_ucf101_published_rates.csv"


class _Net(nn.Module):
    """stem (analog input) -> PLIF -> fc (spike input) -> dw (fed by fc: analog)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 2)
        self.lif = PLIF()
        self.fc = nn.Linear(2, 3)
        self.dw = nn.Linear(3, 3)

    def forward(self, x):
        return self.dw(self.fc(self.lif(self.stem(x))))


def _table():
    dense = count_ops(_Net(), torch.randn(2, 1, 4), num_steps=2, batch=1, dense=True)
    return layer_table(dense, {"fc": 0.5}), dense


def test_conventions_by_hand():
    table, dense = _table()
    # dense MACs: stem 2 x 4 x 2 = 16, fc 2 x 2 x 3 = 12, dw 2 x 3 x 3 = 18; bias adds 4, 6, 6
    assert table[["layer", "dense_mac", "bias_add"]].values.tolist() == [["stem", 16, 4], ["fc", 12, 6],
                                                                         ["dw", 18, 6]]
    res = price_conventions(table, dense, "45nm-fp32")
    sp, lit, sy = res["spikformer"], res["literal"], res["syops"]
    assert (sp["mac"], sp["ac"], sp["mac_layers"]) == (16 + 18, 0.5 * 12, ["stem", "dw"])
    assert (lit["mac"], lit["ac"], lit["mac_layers"]) == (16, 0.5 * 12 + 0.5 * 18, ["stem"])  # dw inherits fc's rate
    # syops: (dense + bias) x rate; PLIF input elements (2 steps x 2) as AC
    assert (sy["mac"], sy["ac"]) == (16 + 4 + 18 + 6, (12 + 6) * 0.5 + 4)
    assert sp["compute_pj"] == pytest.approx(34 * 4.6 + 6 * 0.9)


def test_expected_counts_attention_by_hand():
    import pandas as pd

    _, dense = _table()
    table = pd.DataFrame([("a.product", 8.0, 0.0, float("nan"), True, 0.5, 0.5, 0.5, 2)],
                         columns=["layer", "dense_mac", "bias_add", "rate", "attention", "fq", "fk", "fv", "tokens"])
    e = expected_counts(dense, table)
    # K^T V: 4 x 0.25 = 1; Q (K^T V): 4 x 0.5 x (1 - 0.75^2) = 0.875 -> 1.875, rounded
    assert e.totals()["spike_product"] == 2


def test_measured_rates_feed_the_spikformer_attention_formula():
    torch.manual_seed(0)
    m = create_model("svformer_tiny").eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_(4)
    x = torch.randn(1, *m.config.input_shape)
    rates = measure_rates(m, x)
    with record_spikes(m) as rec, torch.no_grad():
        m(x)
    assert rates["blocks1.0.conv1"] == pytest.approx(float(rec.spikes["blocks1.0.lif"].mean()))
    assert "patch_embed1.conv" not in rates  # analog input
    dense = count_ops(m, x, dense=True)
    res = price_conventions(layer_table(dense, rates), dense)
    per = res["spikformer"]["per_layer"].set_index("layer")
    q, k, v = (rec.spikes[f"blocks3.0.attn.lif_{n}"] for n in "qkv")
    T, B, h, N, d = q.shape
    want = T * B * h * N * d * d * (min(float(k.mean()), float(v.mean())) + float(q.mean()))
    assert per.loc["blocks3.0.attn.product", "ac"] == pytest.approx(want)


def test_price_published_svformer_ucf101(tmp_path):
    out = tmp_path / "p.json"
    assert run_cli(["energy", "price", "--model", "svformer_ucf101", "--rates", str(RATES), "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    per = s["per_view"]
    # analog-input layers, dense MACs by hand from the architecture (16 frames, 224 -> 56 -> 28 -> 7):
    stem = 56 * 56 * 128 * 3 * 6 * 6 * 16
    local1 = 56 * 56 * 128 * (25 + 128) * 16   # blocks1.0 dwconv 5x5 + conv2 1x1
    local2 = 28 * 28 * 256 * (25 + 256) * 16   # blocks2.0
    pw = 7 * 7 * 512 * 384 * 16                # local_path.pwconv
    fc = 1024 * 101
    assert per["spikformer"]["counts"]["mac"] == stem + local1 + local2 + pw + fc
    assert per["literal"]["counts"]["mac"] == stem and per["literal"]["mac_layers"] == ["patch_embed1.conv"]
    assert per["ours"]["counts"]["mac"] == per["spikformer"]["counts"]["mac"]
    for name, v in per.items():
        assert v["total_mj"] == pytest.approx(v["compute_mj"] + v["memory_mj"])
        assert s["per_video"]["5x3"][name]["total_mj"] == pytest.approx(15 * v["total_mj"])
    # the corrected reference figure: ~2.73 G MAC + ~3.82 G AC -> ~16.0 mJ per view
    assert per["spikformer"]["compute_mj"] == pytest.approx(16.0, abs=0.1)
    assert per["literal"]["compute_mj"] < 0.5 * per["spikformer"]["compute_mj"]
    assert s["memory"]["weight_stationary"]["tiers"]["weights"] == "DRAM"  # 53 MB of fp32 weights
    # the printed table: one unit (a view: one clip at one crop) and 4 significant figures in every cell
    from svformer_deploy.energy.price import price_markdown

    md = price_markdown(s)
    assert "per clip" not in md and "/ clip" not in md and "compute / view (mJ)" in md
    row = next(line for line in md.splitlines() if line.startswith("| spikformer |"))
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    digits = [len(n.replace(".", "").lstrip("0")) for c in cells for n in c.split(" / ")]
    assert digits == [4] * len(digits), row  # e.g. 16.00 beside 16.93, never 16


@pytest.mark.parametrize("content,msg", [
    ("name,rate\nno.such.layer,0.1\n", "does not have"),
    ("name,rate\nblocks1.0.conv1,1.5\n", "outside [0, 1]"),
    ("layer,value\nx,1\n", "columns"),
])
def test_price_bad_rates_one_clear_line(tmp_path, capsys, content, msg):
    f = tmp_path / "r.csv"
    f.write_text(content)
    out = tmp_path / "p.json"
    assert run_cli(["energy", "price", "--model", "svformer_tiny", "--rates", str(f), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_price_refuses_a_missing_rate_of_a_spike_input_layer(tmp_path, capsys):
    """A spike-input layer without a stated rate would silently be priced as dense MACs (about +60 % MACs for
    one MLP layer of svformer_ucf101): refused, naming the layer."""
    rows = RATES.read_text().splitlines()
    f = tmp_path / "r.csv"
    f.write_text("\n".join(r for r in rows if not r.startswith("blocks1.0.mlp.fc1,")) + "\n")
    assert run_cli(["energy", "price", "--model", "svformer_ucf101", "--rates", str(f)]) == 2
    err = capsys.readouterr().err
    assert "no input firing rate" in err and "blocks1.0.mlp.fc1" in err and len(err.strip().splitlines()) == 1


def test_price_binary_rates_file_one_clear_line(tmp_path, capsys):
    f = tmp_path / "r.csv"
    f.write_bytes(b"\xff\xfe\x00binary\x80\x81")
    assert run_cli(["energy", "price", "--model", "svformer_tiny", "--rates", str(f)]) == 2
    err = capsys.readouterr().err
    assert "not a UTF-8 CSV" in err and len(err.strip().splitlines()) == 1


def test_dense_model_counts_need_no_weights():
    m = create_model("svformer_tiny")
    dense, tokens = dense_model_counts(m.config)
    assert dense.mode == "dense" and set(tokens) == {"blocks3.0.attn.product", "blocks4.0.attn.product"}


def test_price_views_must_be_clips_x_crops(capsys):
    assert run_cli(["energy", "price", "--model", "svformer_tiny", "--rates", str(RATES), "--views", "five"]) == 2
    assert "CLIPSxCROPS" in capsys.readouterr().err


def test_price_refuses_a_layer_given_twice_naming_it(tmp_path, capsys):
    """The tester's case: a duplicate row appended changed "ours" silently (the last row won)."""
    f = tmp_path / "r.csv"
    lines = RATES.read_text().splitlines()
    f.write_text("\n".join([*lines, "blocks1.0.conv1,0.5,dup"]) + "\n")
    first = next(i for i, line in enumerate(lines, start=1) if line.startswith("blocks1.0.conv1,"))
    assert run_cli(["energy", "price", "--model", "svformer_ucf101", "--rates", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "layer blocks1.0.conv1 is given a rate twice" in err, err
    assert f"(lines {first} and {len(lines) + 1})" in err


def test_price_reads_a_rates_csv_with_a_utf8_bom_as_excel_writes_it(tmp_path):
    plain, bom = tmp_path / "plain.json", tmp_path / "bom.json"
    f = tmp_path / "excel.csv"
    f.write_bytes(b"\xef\xbb\xbf" + RATES.read_bytes())  # Excel's "CSV UTF-8"
    assert run_cli(["energy", "price", "--model", "svformer_ucf101", "--rates", str(RATES), "--json", str(plain)]) == 0
    assert run_cli(["energy", "price", "--model", "svformer_ucf101", "--rates", str(f), "--json", str(bom)]) == 0
    assert json.loads(bom.read_text())["per_view"] == json.loads(plain.read_text())["per_view"]


def test_price_unknown_layer_hint_names_a_command_that_lists_the_layers(tmp_path, capsys):
    f = tmp_path / "r.csv"
    f.write_text("name,rate\nno.such.layer,0.1\n")
    assert run_cli(["energy", "price", "--model", "svformer_tiny", "--rates", str(f)]) == 2
    err = capsys.readouterr().err
    assert "`svformer-deploy info svformer_tiny` lists them" in err and "svformer-deploy models" not in err
    assert run_cli(["info", "svformer_tiny"]) in (0, None)
    listed = capsys.readouterr().out
    assert "blocks1.0.conv1" in listed and "blocks1.0.mlp.lif1" in listed  # what a rates file names
