"""Tracing real (tiny) torch models: graphs, per-item signatures, batch-scaled arguments, fallback, failures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cop_profiler.errors import TraceError
from cop_profiler.graph import compose
from cop_profiler.template import cut, instantiate, tensors_in
from cop_profiler.tracer import _module_text, trace


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(8, 8), nn.Linear(8, 8), nn.ReLU()

    def forward(self, x):
        return self.act(self.fc2(self.act(self.fc1(x))) + x).view(x.size(0), -1)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


class DataDependent(nn.Module):
    """torch.fx cannot trace Python control flow on tensor values."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > -1e9:
            x = torch.relu(self.fc(x))
        return x * 2


def rand(b):
    return torch.randn(b, 8)


def test_residual_model_graph_and_signatures():
    traced = trace(Residual(), rand)
    g = traced.graph
    assert g.traced_with == "fx"
    labels = [n.label for n in g.nodes]
    assert labels[:5] == ["fc1", "act", "fc2", "add", "act"]
    add = next(n for n in g.nodes if n.label == "add")
    assert add.inputs == (2,)  # fc2's output; the other input is the model input
    linear = [o for o in g.ops if o.name == "Linear"]
    assert len(linear) == 1 and "T(float32,[-1, 8])" in linear[0].signature  # both Linears share one operator
    view = next(o for o in g.ops if o.name == "view")
    assert view.invariant and "1*B" in view.signature
    assert all(n.op is None or n.op in traced.instances for n in g.nodes)


def test_operators_rebuild_at_any_batch():
    traced = trace(Residual(), rand)
    for inst in traced.instances.values():
        out = inst.bind(5)()
        assert out.shape[0] == 5


def test_parallel_branches_are_recorded_as_such():
    g = trace(Branchy(), rand).graph
    cat = next(n for n in g.nodes if n.label == "cat")
    assert len(cat.inputs) == 2
    assert compose(g, lambda k: 1.0, "parallel") == 2.0
    assert compose(g, lambda k: 1.0) == 3.0  # eager runs branches one after the other


def test_fx_failure_falls_back_to_eager_recording():
    traced = trace(DataDependent(), rand)
    g = traced.graph
    assert g.traced_with == "recorded"
    assert "torch.fx could not trace" in g.notes[0]
    assert [n.label for n in g.nodes] == ["sum", "gt", "fc", "relu", "mul"]  # the condition's ops ran too
    assert [n.inputs for n in g.nodes] == [(), (0,), (), (2,), (3,)]


def test_integer_inputs_and_permuted_layouts_survive():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.conv = nn.Embedding(50, 6), nn.Conv1d(6, 4, 3)

        def forward(self, t):
            return self.conv(self.emb(t).transpose(1, 2))

    traced = trace(Tokens(), lambda b: torch.randint(0, 50, (b, 10)))
    conv = next(i for i in traced.instances.values() if i.spec.name == "Conv1d")
    assert "perm=[0, 2, 1]" in conv.spec.signature
    emb = next(i for i in traced.instances.values() if i.spec.name == "Embedding")
    assert emb.bind(3)().shape == (3, 10, 6)


def test_inputs_made_once_are_cut_to_each_batch_with_the_layout_of_fresh_ones():
    class TimeMajor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.conv, self.rnn = nn.Embedding(50, 6), nn.Conv1d(6, 4, 3), nn.GRU(4, 5)

        def forward(self, t):
            x = self.conv(self.emb(t).transpose(1, 2))  # permuted input, batch outermost in memory
            return self.rnn(x.permute(2, 0, 1).contiguous())[0]  # (time, batch, features): batch not outermost

    traced = trace(TimeMajor(), lambda b: torch.randint(0, 50, (b, 10)))
    conv = next(i for i in traced.instances.values() if i.spec.name == "Conv1d")
    gru = next(i for i in traced.instances.values() if i.spec.name == "GRU")
    assert conv.args[0].outer_batch_dim() == 0 and gru.args[0].outer_batch_dim() is None
    for inst in (conv, gru):
        largest = instantiate(inst.args, 8)
        for b in (8, 3, 1):
            (cut_x,), (fresh_x,) = cut(inst.args, largest, b), instantiate(inst.args, b)
            assert cut_x.shape == fresh_x.shape and cut_x.stride() == fresh_x.stride()
            shares = cut_x.untyped_storage().data_ptr() == largest[0].untyped_storage().data_ptr()
            assert shares == (inst is conv)  # a view where the layout allows, else made afresh
    for inst in traced.instances.values():
        bind = inst.binder(8)
        for b in (8, 3, 1):
            assert [t.shape for t in tensors_in(bind(b)())] == [t.shape for t in tensors_in(inst.bind(b)())]
    with pytest.raises(ValueError, match="at most 8"):
        conv.binder(8)(9)


def test_failures_are_reported_clearly():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(TraceError, match="fails on its example input.*boom"):
        trace(Broken(), rand)

    class BatchDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.shape[0] == 2 else x.relu() + 1

    with pytest.raises(TraceError, match="batch size"):
        trace(BatchDependent(), rand)

    class NoOps(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TraceError, match="no tensor operators"):
        trace(NoOps(), rand)


def test_boolean_masks_keep_their_recorded_values_for_every_item():
    from cop_profiler.template import describe, instantiate, templatize

    def mask(b):
        m = torch.zeros(b, 8, dtype=torch.bool)
        m[:, 5:] = True  # the last three tokens are padding
        return m

    t = templatize(mask(2), mask(3))
    assert torch.equal(instantiate(t, 6), mask(6))
    assert "True" not in describe(t)  # the values are not part of the signature


def test_an_example_input_that_is_a_list_is_one_argument():
    class Stack(torch.nn.Module):
        def forward(self, parts):
            return torch.cat(parts, dim=1).relu()

    traced = trace(Stack(), lambda b: [torch.randn(b, 4), torch.randn(b, 4)])
    assert {inst.spec.name for inst in traced.instances.values()} >= {"cat", "relu"}


def test_permuted_and_constant_masks_keep_their_values_and_masks_padding_differently_differ():
    from cop_profiler.template import describe, instantiate, templatize

    def pad(b, keep=5):
        m = torch.zeros(b, 8, dtype=torch.bool)
        m[:, keep:] = True
        return m

    t = templatize(pad(2).t(), pad(3).t())  # (8, B), batch dim innermost in memory
    made = instantiate(t, 4)
    assert torch.equal(made, pad(4).t()) and made.stride() == pad(4).t().stride()
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    assert torch.equal(instantiate(templatize(causal, causal.clone()), 4), causal)
    assert describe(templatize(pad(2), pad(3))) != describe(templatize(pad(2, 3), pad(3, 3)))


def test_masks_that_change_from_item_to_item_or_run_to_run_keep_no_values_and_scalars_work():
    from cop_profiler.template import describe, instantiate, templatize

    def lengths(b, seed):
        g = torch.Generator().manual_seed(seed)
        return torch.arange(8)[None, :] >= torch.randint(1, 9, (b,), generator=g)[:, None]

    # random lengths: the signature must not depend on the draw
    assert describe(templatize(lengths(2, 1), lengths(3, 2))) == describe(templatize(lengths(2, 3), lengths(3, 4)))
    assert "true=" not in describe(templatize(lengths(2, 1), lengths(3, 2)))
    # items laid out cat-style, not one block per item: no values kept
    a, b = torch.tensor([True, False]), torch.tensor([False, False])
    cat = lambda n: torch.cat([a.repeat(n, 1), b.repeat(n, 1)])  # noqa: E731
    assert templatize(cat(2), cat(3)).fill is None
    flag = templatize(torch.tensor(True), torch.tensor(True))  # a 0-dim bool (torch.where on a sum)
    assert instantiate(flag, 4).shape == () and bool(instantiate(flag, 4))


def test_settings_a_module_repr_leaves_out_tell_operators_apart():
    class Attention(nn.Module):
        def __init__(self, heads: int) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(32, heads, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    def mha_op(heads: int):
        torch.manual_seed(0)
        traced = trace(Attention(heads), lambda b: torch.randn(b, 10, 32))
        return next(i.spec for i in traced.instances.values() if i.spec.name == "MultiheadAttention")

    # MultiheadAttention's repr shows only its out_proj: 8 heads reused 4 heads' timings, while the softmax
    # runs over heads x tokens^2 (measured here: 64 dims, 128 tokens, batch 8: 4.6 ms with 4 heads, 7.9 with 8)
    four, eight = mha_op(4), mha_op(8)
    assert four.key != eight.key and "num_heads=4" in four.signature and "num_heads=8" in eight.signature
    assert mha_op(4).key == four.key  # stable: no addresses or per-instance values
    layer = lambda first: nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=first)  # noqa: E731
    texts = {_module_text(layer(first)) for first in (False, True)}
    assert len(texts) == 2 and all("self_attn:" in t and "num_heads=4" in t for t in texts)
    assert _module_text(nn.Linear(4, 4)) == "torch.nn.modules.linear.Linear(in_features=4, out_features=4, bias=True)" \
        "<torch.float32>"  # a module whose repr says it all keeps its signature


def test_an_example_input_that_ignores_the_batch_size_is_refused():
    # every operator was profiled at the one shape, and predictions were flat from batch 1 to 32
    with pytest.raises(TraceError, match=r"same shapes \(\(4, 8\)\).*batch_size items"):
        trace(Residual(), lambda b: torch.randn(4, 8))
    with pytest.raises(TraceError, match="same shapes"):
        trace(Branchy(), lambda b: (torch.randn(1, 8),))
    items = trace(Branchy(), lambda b: torch.stack([torch.randn(8) for _ in range(b)]))  # the batch as a count
    assert items.graph.nodes


class _MeanUnderCondition(nn.Module):
    """torch.fx cannot trace it (control flow on a tensor's value): the eager recorder does."""

    def forward(self, x):
        if x.sum() > -1e9:
            x = x.mean(1, keepdim=True) + x
        return x.softmax(-1)


class _Mean(nn.Module):
    def forward(self, x):
        return (x.mean(1, keepdim=True) + x).softmax(-1)


def test_a_tensor_method_is_one_operator_whichever_way_its_model_was_traced():
    """The recorder saw ``x.mean(1)`` as the function ``.TensorBase.mean`` and torch.fx as the method ``mean``:
    a model traced by the fallback timed again what a traced model had stored."""
    recorded, fx = trace(_MeanUnderCondition(), rand), trace(_Mean(), rand)
    assert (recorded.graph.traced_with, fx.graph.traced_with) == ("recorded", "fx")
    names = {k: i.spec.name for k, i in recorded.instances.items()}
    assert {names[k] for k in set(recorded.instances) & set(fx.instances)} == {"mean", "softmax"}
    assert all(not i.spec.signature.startswith("function:.") for i in recorded.instances.values())
    mean = next(i for i in recorded.instances.values() if i.spec.name == "mean")
    assert mean.kind == "method" and mean.binder(4)(4)().shape == (4, 1)  # runs alone, as fx's method call


def test_a_signature_takes_only_the_settings_a_repr_cannot_show():
    # ReLU's repr shows its one setting when set ("inplace=True"): its text is as before the settings went in,
    # so a DB's timings of it still serve (a ReLU profiled before was timed again under a new key)
    assert _module_text(nn.ReLU()) == "torch.nn.modules.activation.ReLU()"
    assert _module_text(nn.SiLU()) == "torch.nn.modules.activation.SiLU()"
    assert _module_text(nn.Hardswish()) != _module_text(nn.Hardswish(inplace=True))  # its repr shows neither
    # add_bias_kv is no attribute of its own: MultiheadAttention holds it as the parameters bias_k and bias_v
    assert _module_text(nn.MultiheadAttention(32, 4)) != _module_text(nn.MultiheadAttention(32, 4, add_bias_kv=True))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True) for _ in range(3))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    torch.manual_seed(0)
    model = Encoder()
    for i, (name, sub) in enumerate(model.named_modules()):
        sub.name, sub.layer_idx = name, i  # set for hooks and logs: the instance's own, not a setting
    traced = trace(model, lambda b: torch.randn(b, 10, 32))
    assert [i.spec.name for i in traced.instances.values()] == ["TransformerEncoderLayer"]
    assert "num_heads=4" in next(iter(traced.instances.values())).spec.signature


class _OperatorsUnderCondition(nn.Module):
    """Python operators and properties the recorder sees as Tensor dunders and descriptors."""

    def forward(self, x):
        if x.sum() > -1e9:
            x = x + 0
        return (x[:, :4], 1 - x, 2 / x, 2 ** x, x // 2, x.T, x.mT)


class _Operators(nn.Module):
    def forward(self, x):  # no x + 0: fx's operator.add is the recorder's method add (x.add(0) is the same call)
        return (x[:, :4], 1 - x, 2 / x, 2 ** x, x // 2, x.T, x.mT)


def test_python_operators_and_properties_are_the_operators_torch_fx_records():
    """``x[:, :4]``, ``1 - x`` and ``x.T`` reach the recorder as ``__getitem__``, ``__rsub__(x, 1)`` and a
    descriptor's ``__get__``: recorded as such they were other operators than fx's ``getitem``, ``sub(1, x)``
    and ``getattr(x, 'T')``, and every property was one operator (``x.T`` and ``x.mT`` shared a key)."""
    recorded, fx = trace(_OperatorsUnderCondition(), rand), trace(_Operators(), rand)
    assert (recorded.graph.traced_with, fx.graph.traced_with) == ("recorded", "fx")
    mine = {i.spec.signature for i in recorded.instances.values()}
    assert {i.spec.signature for i in fx.instances.values()} - mine == set()
    for inst in recorded.instances.values():
        assert inst.bind(4)() is not None  # runs alone at another batch size
    sub = next(i for i in recorded.instances.values() if i.spec.name == "sub")
    assert torch.equal(sub.target(*sub.args[:1], torch.ones(2)), torch.zeros(2))  # 1 - x, not x - 1


def test_a_constructor_argument_kept_under_another_name_is_a_setting():
    """PairwiseDistance keeps ``p`` as ``norm`` and shows no repr: with settings only the attributes named as
    constructor arguments, its 1-, 2- and 3-norms were one operator (timed once, for whichever came first)."""
    assert len({_module_text(nn.PairwiseDistance(p=p)) for p in (1.0, 2.0, 3.0)}) == 3
    traced = trace(_Distances(), rand)
    assert [i.spec.name for i in traced.instances.values()].count("PairwiseDistance") == 2


class _Distances(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l3 = nn.PairwiseDistance(p=1.0), nn.PairwiseDistance(p=3.0)

    def forward(self, x):
        return self.l1(x, x.flip(0)) + self.l3(x, x.flip(0))


class WithScripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.jit.script(nn.Sequential(nn.Linear(8, 8), nn.ReLU()))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_torchscript_module_is_named_not_blamed_on_the_model():
    # the recorder's hooks failed on it ("register_forward_pre_hook is not supported on ScriptModules"),
    # reported as "the model fails on its example input" although the model runs
    torch.manual_seed(0)
    model = WithScripted().eval()
    assert model(torch.randn(2, 8)).shape == (2, 2)
    with pytest.raises(TraceError, match="submodule 'body' is a TorchScript module"):
        trace(model, lambda b: torch.randn(b, 8))
    whole = torch.jit.trace(nn.Linear(8, 2).eval(), torch.randn(2, 8))
    with pytest.raises(TraceError, match="the model is a TorchScript module"):
        trace(whole, lambda b: torch.randn(b, 8))


class FromNumpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x, offsets):
        return self.fc(torch.as_tensor(x, dtype=torch.float32)) + torch.as_tensor(offsets, dtype=torch.float32)


def test_arguments_that_are_not_tensors_but_compare_elementwise_are_a_one_line_trace_error():
    # numpy arrays reached ``v2 != v3``: a ValueError (shapes that do not broadcast, or an ambiguous truth
    # value) went up as a traceback
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    model = FromNumpy().eval()
    with pytest.raises(TraceError, match="ndarray") as info:
        trace(model, lambda b: (rng.random((b, 8)), rng.random(8)))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    with pytest.raises(TraceError, match="ndarray") as info:
        trace(model, lambda b: (torch.randn(b, 8), rng.random(8)))
    assert "\n" not in str(info.value)


class Trimmed(nn.Module):
    """Pads a batch, then slices it back to the batch size: a slice bound that scales with the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return torch.cat([y, y])[: x.size(0)]


def test_a_slice_bound_that_scales_with_the_batch_is_rebuilt_for_any_batch():
    # slice(None, 2, None) at batch 2 and slice(None, 3, None) at 3 were refused as an argument that changed
    torch.manual_seed(0)
    traced = trace(Trimmed().eval(), rand)
    (getitem,) = [i for i in traced.instances.values() if i.spec.name == "getitem"]
    assert "slice(None, 1*B, None)" in getitem.spec.signature
    assert getitem.bind(5)().shape == (5, 8)
    fixed = trace(Residual().eval(), rand)  # constant slices keep their signature text (and DB keys)
    from cop_profiler.template import describe

    assert describe(slice(None, 4, None)) == "slice(None, 4, None)" and fixed.graph.nodes


class ShiftsItsInput(nn.Module):
    """Changes its input in place after using it."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 2)

    def forward(self, ids):
        h = self.emb(ids)
        ids += 10
        return self.fc(h.mean(1))


def test_each_recording_runs_on_its_own_copy_of_the_example_input():
    # the recordings shared one example input: the second ran on ids the first had moved out of the
    # embedding's range, reported as "the model fails on its example input (batch 2): IndexError"
    torch.manual_seed(0)
    model = ShiftsItsInput().eval()
    traced = trace(model, lambda b: torch.randint(0, 10, (b, 5)))
    (emb,) = [i for i in traced.instances.values() if i.spec.name == "Embedding"]
    assert emb.args[0].high <= 10 and emb.bind(4)().shape == (4, 5, 8)


class FlipsItsMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x, mask):
        y = self.fc(x).masked_fill(mask, 0.0)
        mask.logical_not_()
        return y


class FlipsItsMaskOnAValue(FlipsItsMask):
    def forward(self, x, mask):
        y = self.fc(x).masked_fill(mask, 0.0)
        if y.sum() > -1e9:  # control flow on a value: torch.fx cannot trace it, the eager recorder runs
            mask.logical_not_()
        return y


def test_integer_and_boolean_arguments_keep_their_values_at_the_call():
    # values were read after the whole forward: a mask flipped in place after its use was recorded flipped
    def example(b):
        mask = torch.zeros(b, 8, dtype=torch.bool)
        mask[:, :2] = True
        return torch.randn(b, 8), mask

    torch.manual_seed(0)
    for model, how in ((FlipsItsMask().eval(), "fx"), (FlipsItsMaskOnAValue().eval(), "recorded")):
        traced = trace(model, example)
        assert traced.graph.traced_with == how
        (fill,) = [i for i in traced.instances.values() if i.spec.name == "masked_fill"]
        assert "T(bool,[-1, 8],true=2)" in fill.spec.signature, fill.spec.signature
        (flip,) = [i for i in traced.instances.values() if i.spec.name == "logical_not_"]
        assert "true=2" in flip.spec.signature  # its own argument, before it ran


@torch.jit.script
def scripted_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class CallsScriptedByName(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return scripted_gelu(y) if y.sum() > -1e9 else y  # on a value: torch.fx fails first


class CallsScriptedThroughAModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return SCRIPTED.act(self.fc(x))  # a global that is not the function: only torch.fx's failure tells


SCRIPTED = type("Namespace", (), {"act": scripted_gelu})


def test_a_torchscript_function_called_in_forward_is_refused_not_left_out():
    # its operators run inside TorchScript: the eager recorder saw none of them, and the graph held fc alone
    torch.manual_seed(0)
    with pytest.raises(TraceError, match="calls the TorchScript function scripted_gelu"):
        trace(CallsScriptedByName().eval(), rand)
    with pytest.raises(TraceError, match="calls a TorchScript function .*scripted_gelu"):
        trace(CallsScriptedThroughAModule().eval(), rand)


class ZeroesAColumn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        y[:, : x.size(0)] = 0.5  # item assignment: torch.fx cannot trace it, the eager recorder runs
        return y.relu()


def test_an_item_assignment_is_an_operator_of_the_graph():
    # x[i] = v returns None: the recorder kept only calls with a tensor result and left its cost out
    torch.manual_seed(0)
    traced = trace(ZeroesAColumn().eval(), rand)
    assert traced.graph.traced_with == "recorded"
    assert [n.label for n in traced.graph.nodes] == ["fc", "__setitem__", "relu"]
    assert traced.graph.nodes[2].inputs == (1,)  # relu reads what the assignment wrote
    (assign,) = [i for i in traced.instances.values() if i.spec.name == "__setitem__"]
    assert "slice(None, 1*B, None)" in assign.spec.signature and not assign.spec.invariant
    assign.bind(5)()


class HasAnAttributeNamedLikeAScriptedGlobal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.scripted_gelu = nn.Linear(8, 8), nn.GELU()

    def forward(self, x):
        return self.scripted_gelu(self.fc(x))  # the attribute, not the module's scripted global of that name


def test_an_attribute_named_like_a_scripted_global_is_not_a_torchscript_call():
    # every name of forward's code was looked up among the globals, attributes included: this model, which
    # calls no TorchScript, was refused as calling scripted_gelu()
    torch.manual_seed(0)
    traced = trace(HasAnAttributeNamedLikeAScriptedGlobal().eval(), rand)
    assert [n.label for n in traced.graph.nodes] == ["fc", "scripted_gelu"]
