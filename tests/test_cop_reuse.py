"""Rotating copies of an operator's weights so they are as cold as inside the model (cop_profiler.reuse)."""

from __future__ import annotations

import torch
from torch import nn

from cop_profiler.reuse import MAX_BYTES, MAX_COPIES, MIN_BYTES, copies
from cop_profiler.tracer import trace

MIB = 1024 * 1024


def test_copies_reproduce_the_models_weight_bytes_between_two_uses():
    assert copies(13 * MIB, 4 * MIB) == 3  # 3 x 4 MiB: nearest to the model's 13 MiB
    assert copies(13 * MIB, 1 * MIB) == 13
    assert copies(4 * MIB, 4 * MIB) == 1  # the operator is the model: timed as it is
    assert copies(5 * MIB, 4 * MIB) == 1


def test_small_weights_are_timed_hot_and_copies_are_bounded():
    assert copies(100 * MIB, MIN_BYTES - 1) == 1
    assert copies(100 * MIB, MIN_BYTES) == MAX_COPIES
    assert copies(10_000 * MIB, 64 * MIB) == MAX_BYTES // (64 * MIB)


class Wide(nn.Module):
    """Three 1024x1024 linear layers (4 MiB of weights each) and an embedding that does not count."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50_000, 64)  # 12 MiB, read a row at a time
        self.proj = nn.Linear(64, 1024)
        self.fc = nn.ModuleList(nn.Linear(1024, 1024) for _ in range(3))

    def forward(self, ids):
        x = self.proj(self.emb(ids).mean(dim=1))
        for layer in self.fc:
            x = torch.relu(layer(x))
        return x


def ids(b):
    return torch.randint(0, 50_000, (b, 4))


def test_tracer_gives_weighty_modules_copies_and_says_so_in_the_signature():
    traced = trace(Wide(), ids)
    by_name = {}
    for inst in traced.instances.values():
        by_name.setdefault(inst.spec.name, []).append(inst)
    big = [i for i in by_name["Linear"] if "in_features=1024" in i.spec.signature]
    assert len(big) == 1 and big[0].copies == 3 and big[0].spec.signature.endswith("|copies=3")
    # The model reads 12.27 MiB whole (the embedding's 12 MiB are left out): 3 x 4.004 MiB, and 48 x the
    # 0.254 MiB of the 64 -> 1024 layer.
    small = [i for i in by_name["Linear"] if "in_features=64" in i.spec.signature]
    assert len(small) == 1 and small[0].copies == 48
    assert by_name["Embedding"][0].copies == 1


def test_small_models_keep_their_signatures():
    traced = trace(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), lambda b: torch.randn(b, 8))
    assert all(i.copies == 1 and "copies=" not in i.spec.signature for i in traced.instances.values())


def test_a_bound_operator_runs_its_copies_in_turn_with_the_same_result():
    traced = trace(Wide(), ids)
    inst = next(i for i in traced.instances.values() if i.copies == 3)
    seen = []
    inst.target.register_forward_pre_hook(lambda module, args: seen.append(id(module)))
    fn = inst.bind(2)
    outs = [fn() for _ in range(6)]
    assert len(set(seen)) == 3 and seen[:3] == seen[3:]  # three distinct copies, in turn
    assert id(inst.target) not in seen  # the model's own module is left alone
    assert all(torch.equal(outs[0], o) for o in outs)


def test_copy_counts_near_each_other_stand_for_one_another_and_signatures_round_trip():
    from cop_profiler.reuse import NEAR, near
    from cop_profiler.tracer import split_copies, with_copies

    assert near(2, 3) and near(4, 5) and near(3, 2) and not near(2, 4) and not near(1, 2)
    assert near(10, int(10 * NEAR)) and not near(10, int(10 * NEAR) + 1)
    for n in (1, 2, 48):
        assert split_copies(with_copies("module:x|args=(f32[-1,8])", n)) == ("module:x|args=(f32[-1,8])", n)
    assert with_copies("s", 1) == "s"


def _headed(classes):
    torch.manual_seed(0)  # the same body; only the head's width differs
    return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, classes)).eval()


def _rows(b):
    return torch.randn(b, 256)


def test_a_second_function_with_a_new_head_reuses_the_body_timed_at_a_nearby_copy_count(tmp_path):
    from cop_profiler.db import ProfileDB
    from cop_profiler.predictor import ModelPredictor
    from cop_profiler.profiler import ProfileConfig, profile_model
    from cop_profiler.timer import TimingPolicy

    config = ProfileConfig(batches=(1, 4), threads=(1,), policy=TimingPolicy(blocks=1, max_blocks=1),
                           calibration_batches=())
    first, second = _headed(10), _headed(200)
    # The 256x256 layers (257 KiB each) rotate through 2 copies in the first model (536 KiB in all) and
    # through 3 in the second (732 KiB: the wider head): the same operators, one copy apart.
    assert {i.copies for i in trace(first, _rows).instances.values() if "out_features=256" in i.spec.signature} == {2}
    assert {i.copies for i in trace(second, _rows).instances.values() if "out_features=256" in i.spec.signature} == {3}
    path = str(tmp_path / "p.sqlite")
    with ProfileDB(path) as db:
        profile_model(trace(first, _rows), first, _rows, db, "first", config)
        report = profile_model(trace(second, _rows), second, _rows, db, "second", config)
        forced = profile_model(trace(second, _rows), second, _rows, db, "forced",
                               ProfileConfig(**{**config.__dict__, "force": True}))
    assert report.new_operators == 1 and report.reused_operators == 2  # only the head (and ReLU is shared)
    assert any("copies 3->2" in note for note in report.notes)
    assert forced.new_operators == 3 and any("copies 3->2" in note for note in forced.notes)  # all re-timed
    predictor = ModelPredictor.load(path, "second")
    assert predictor.predict(4, 1).seconds > 0 and not predictor.predict(4, 1).extrapolated


def test_the_stored_graph_does_not_depend_on_which_machine_profiled_it(tmp_path):
    """Nearby reuse follows the operators the DB holds, not this machine's timings: a second machine
    profiling the same model keeps the graph, times the stored operator, and both machines predict."""
    from cop_profiler.db import ProfileDB, Timing
    from cop_profiler.predictor import ModelPredictor
    from cop_profiler.profiler import ProfileConfig, profile_model
    from cop_profiler.timer import TimingPolicy

    config = ProfileConfig(batches=(1, 4), threads=(1,), policy=TimingPolicy(blocks=1, max_blocks=1),
                           calibration_batches=())
    first, second = _headed(10), _headed(200)
    path = str(tmp_path / "p.sqlite")
    with ProfileDB(path) as db:
        profile_model(trace(first, _rows), first, _rows, db, "first", config)
        profile_model(trace(second, _rows), second, _rows, db, "second", config)
        graph = db.model_graph("second")
        # another machine's timings of every operator the graph names, as if it had profiled it there
        for key in graph.op_keys():
            db.put_timings(key, "other-machine", "cpu", {(b, 1): Timing(1e-3 * b) for b in (1, 4)})
        again = trace(second, _rows)
        from cop_profiler.profiler import reuse_nearby

        assert reuse_nearby(again, db).graph.op_keys() == graph.op_keys()
    assert ModelPredictor.load(path, "second", "other-machine").predict(4, 1).seconds > 0
    assert ModelPredictor.load(path, "second").predict(4, 1).seconds > 0
