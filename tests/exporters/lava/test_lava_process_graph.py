"""The whole network in one Lava process graph: every netx partition plus the float host op as a Lava process
(``process_graph.py``); its partition spikes and logits are compared with the emulation's."""

import numpy as np
import pytest
import torch

from svformer_deploy.errors import VerificationError
from svformer_deploy.exporters.lava.export import export_lava
from svformer_deploy.exporters.lava.process_graph import lava_end_to_end, schedule
from svformer_deploy.exporters.lava.verify import _split
from tests.exporters.conftest import active_model, clips


def test_schedule_gives_every_partition_its_own_slot():
    order = [("a", 1), ("b", 2), ("c", 1)]
    starts, steps = schedule(order, num_frames=8)
    assert starts == [1, 10, 20] and steps == 28
    # partition k sends frames at S_k .. S_k + T - 1 and reads its last layer until S_k + T + L_k - 1:
    # the windows tile the run without overlap and the last one ends at the last step
    ends = [s + 8 + layers - 1 for s, (_, layers) in zip(starts, order)]
    assert all(e + 1 == s for e, s in zip(ends, starts[1:])) and ends[-1] == steps


def test_split_balances_partitions_over_workers():
    jobs = {n: (None, np.zeros(size, np.int8)) for n, size in [("a", 100), ("b", 60), ("c", 50), ("d", 10)]}
    groups = _split(jobs, 2)
    assert sorted(sum(groups, [])) == ["a", "b", "c", "d"] and len(groups) == 2
    assert sorted(sum(jobs[n][1].size for n in g) for g in groups) == [110, 110]
    assert _split(jobs, 8) == [["a"], ["b"], ["c"], ["d"]]  # never more workers than partitions


def test_end_to_end_takes_one_clip(tmp_path):
    model = active_model()
    path, _, _ = export_lava(model, tmp_path / "b", checkpoint_sha256="ab" * 32)
    with pytest.raises(VerificationError, match="one clip"):
        lava_end_to_end(path, clips(2, size=model.config.img_size), python="unused")


@pytest.mark.slow
def test_whole_network_in_one_lava_process_graph_matches_the_emulation(tmp_path):
    model = active_model()
    path, _, parts = export_lava(model, tmp_path / "b", checkpoint_sha256="ab" * 32)
    report = lava_end_to_end(path, clips(1, size=model.config.img_size)[0])
    graph = report["lava_graph"]
    assert graph["partitions"] == len(parts) == 14 and graph["lava_processes"] == 15
    T = model.config.num_frames
    assert graph["steps"] == sum(T + len(p.layers) for p in parts)
    layers = report["partition_layers"]
    assert len(layers) == sum(len(p.layers) for p in parts)  # every layer of every partition came back
    assert sum(v["spikes"] for v in layers.values()) > 1000  # real activity went through Lava
    for name, v in layers.items():
        assert v["bit_exact"] and v["mismatches"] == 0, name
    assert report["same_top1"]
    assert report["logits_max_abs_diff"] <= 1e-4 * max(1.0, float(np.abs(report["logits_emulation"]).max()))
    assert not torch.allclose(torch.tensor(report["logits_lava"]), torch.zeros(10))
