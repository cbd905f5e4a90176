"""The continual-learning plugins' defining properties, on a tiny linear "seq2seq" (one output position) and a fake
task data object, against hand computations: EWC's Fisher, MAS's output sensitivity, the quadratic penalty, A-GEM's
projection, DER++'s stored logits; every plugin's state survives save + restore."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from slukd.continual.agem import AGEM, project_gradient
from slukd.continual.derpp import DERpp
from slukd.continual.ewc import EWC
from slukd.continual.mas import MAS
from slukd.continual.plugin import ContinualPlugin, TaskView, check_plugins
from slukd.continual.rehearsal import Rehearsal

D, V = 3, 4


class FakeData:
    """Items ``i0..`` with features x [D] and label y; the model maps x to logits [V] (one target position)."""

    device = "cpu"

    def __init__(self, n: int = 6, seed: int = 0, classes: tuple[str, ...] = ("a", "b")) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = [f"i{seed}_{k}" for k in range(n)]
        self.x = {i: torch.randn(D, generator=g) for i in self.ids}
        self.y = {i: k % V for k, i in enumerate(self.ids)}
        self.labels = [classes[k % len(classes)] for k in range(n)]

    def memory_candidates(self, t):
        return list(self.ids), list(self.labels)

    def features(self, t, model, ids):
        return torch.stack([self.x[i] for i in ids])

    def batches(self, ids, batch_size, shuffle=False, seed=0):
        ids = [i for i in ids if i in self.x]
        for k in range(0, len(ids), batch_size):
            part = ids[k : k + batch_size]
            yield SimpleNamespace(id=part, x=torch.stack([self.x[i] for i in part]),
                                  y=torch.tensor([self.y[i] for i in part]))  # fmt: skip

    def forward(self, model, batch):
        logits = model(batch.x).unsqueeze(1)
        return {"logits": logits, "gold_mask": torch.ones(logits.shape[:2], dtype=torch.bool)}

    def loss(self, model, batch):
        return torch.nn.functional.cross_entropy(model(batch.x), batch.y)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(D, V)


def _setup(plugin, n_train=6):
    plugin.setup({"n_train": n_train, "seed": 0, "out": None})
    return plugin


def test_ewc_fisher_is_the_mean_squared_batch_gradient_and_the_penalty_pulls_to_the_anchor():
    data, model = FakeData(), _model()
    ewc = _setup(EWC(weight=2.0, batch_size=2))
    ewc.after_task(TaskView(t=0, model=model, data=data))
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = list(data.batches(data.ids, 2))
    for b in batches:
        model.zero_grad()
        data.loss(model, b).backward()
        for n, p in model.named_parameters():
            want[n] += p.grad**2 / len(batches)
    for n in want:
        assert torch.allclose(ewc.importance[n], want[n], atol=1e-7), n
    brain = SimpleNamespace(_model=model)
    assert float(ewc.batch_loss(brain, None, {}).detach()) == pytest.approx(0.0, abs=1e-12)  # at the anchor
    with torch.no_grad():
        model.weight += 0.1
    expect = 2.0 * sum(float((want[n] * (p.detach() - ewc.anchor[n]) ** 2).sum()) for n, p in model.named_parameters())
    loss = ewc.batch_loss(brain, None, {})
    assert float(loss) == pytest.approx(expect, rel=1e-5) and float(loss) > 0
    loss.backward()  # its gradient points away from the anchor: a step against it goes back
    assert float((model.weight.grad * 0.1).sum()) > 0


def test_ewc_accumulates_online_with_decay():
    data, model = FakeData(), _model()
    ewc = _setup(EWC(weight=1.0, decay=0.5, batch_size=3))
    ewc.after_task(TaskView(t=0, model=model, data=data))
    first = {k: v.clone() for k, v in ewc.importance.items()}
    data2 = FakeData(seed=1)
    ewc.after_task(TaskView(t=1, model=model, data=data2))
    fresh = _setup(EWC(weight=1.0, batch_size=3))
    fresh.after_task(TaskView(t=1, model=model, data=data2))
    for k in first:
        assert torch.allclose(ewc.importance[k], fresh.importance[k] + 0.5 * first[k], atol=1e-7)


def test_mas_importance_is_the_output_norm_sensitivity():
    data, model = FakeData(), _model()
    mas = _setup(MAS(batch_size=6))
    mas.after_task(TaskView(t=0, model=model, data=data))
    x = torch.stack([data.x[i] for i in data.ids])
    model.zero_grad()
    (model(x) ** 2).sum(-1).mean().backward()
    assert torch.allclose(mas.importance["weight"], model.weight.grad.abs(), atol=1e-6)
    assert torch.allclose(mas.importance["bias"], model.bias.grad.abs(), atol=1e-6)


def test_agem_projection_formula():
    g, ref = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    new, projected = project_gradient(g, ref)
    dot = float(g @ ref)
    assert projected and dot < 0
    assert torch.allclose(new, g - dot / float(ref @ ref) * ref)
    assert float(new @ ref) == pytest.approx(0.0, abs=1e-6)  # the memory's loss does not rise to first order
    same, projected = project_gradient(torch.tensor([1.0, 1.0, 0.0]), ref)
    assert not projected and torch.equal(same, torch.tensor([1.0, 1.0, 0.0]))


def test_agem_before_step_removes_the_conflict_with_the_memory_gradient():
    data, model = FakeData(), _model()
    agem = _setup(AGEM(per_class=3, batch_size=6))
    agem.after_task(TaskView(t=0, model=model, data=data))
    assert len(agem.memory) == 6 and agem.train_items(TaskView(t=1, model=model, data=data)) == []  # not replayed
    agem.before_task(TaskView(t=1, model=model, data=data, seed=5))
    ref_batch = next(iter(data.batches(agem.memory.ids(), 6)))
    model.zero_grad()
    data.loss(model, ref_batch).backward()
    g_ref = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    for p in model.parameters():  # a gradient that conflicts with the memory's
        p.grad = -p.grad.clone() + 0.01
    brain = SimpleNamespace(_model=model, optimizer_step=0)
    agem.before_step(brain)
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert agem.projected == 1 and float(g @ g_ref) == pytest.approx(0.0, abs=1e-5)


def test_derpp_keeps_the_logits_of_the_model_that_stored_them():
    data1, data2 = FakeData(seed=0, classes=("a", "b")), FakeData(seed=1, classes=("c", "d"))
    m1, m2 = _model(0), _model(1)
    der = _setup(DERpp(per_class=2, alpha=1.0, batch_size=4), n_train=12)
    der.after_task(TaskView(t=0, model=m1, data=data1))
    old = {i: z.clone() for i, z in der.logits.items()}
    assert set(old) == set(der.memory.ids()) and len(old) == 4
    for i, z in old.items():
        assert torch.allclose(z.float(), m1(data1.x[i]).detach().unsqueeze(0), atol=1e-2)
    data = FakeData(seed=0)  # one object holding both tasks' items
    data.x.update(data2.x), data.y.update(data2.y)
    data.memory_candidates = data2.memory_candidates
    der.after_task(TaskView(t=1, model=m2, data=data))
    for i in old:  # task-1 items still in memory keep task 1's logits, not the newer model's
        if i in der.logits:
            assert torch.equal(der.logits[i], old[i])
    assert {i for i in der.logits if i in data2.x}, "task-2 items got logits"
    # the loss: 0 for a student that reproduces the stored logits, > 0 for a noise student
    ids = list(old)[:2]
    batch = SimpleNamespace(id=ids)
    stored = {"logits": torch.stack([old[i].float() for i in ids])}
    if all(i in der.logits for i in ids):
        assert float(der.batch_loss(None, batch, stored)) == pytest.approx(0.0, abs=1e-6)
    noise = {"logits": torch.randn(2, 1, V) * 3}
    assert float(der.batch_loss(None, batch, noise)) > 0.1


@pytest.mark.parametrize("make", [lambda: EWC(batch_size=2), lambda: MAS(batch_size=2),
                                  lambda: AGEM(per_class=2), lambda: DERpp(per_class=2)])  # fmt: skip
def test_state_survives_save_and_restore(tmp_path, make):
    data, model = FakeData(), _model()
    a = _setup(make())
    a.after_task(TaskView(t=0, model=model, data=data))
    a.save(tmp_path, 0)
    b = _setup(make())
    b.restore(tmp_path, 0)
    assert a.summary() == b.summary()
    sa, sb = a.state_dict(), b.state_dict()
    if isinstance(a, Rehearsal):
        assert a.memory.ids() == b.memory.ids()
    if isinstance(a, DERpp):
        assert a.logits.keys() == b.logits.keys() and all(torch.equal(a.logits[k], b.logits[k]) for k in a.logits)
    for key in sa:
        for name in sa[key]:
            assert torch.equal(sa[key][name], sb[key][name])
    c = _setup(make())
    if a.stateful:
        with pytest.raises(FileNotFoundError, match="after task 2"):
            c.restore(tmp_path, 1)


def test_plugin_names_are_unique_and_typed():
    with pytest.raises(ValueError, match="two continual methods are named 'ewc'"):
        check_plugins([EWC(), EWC()])
    with pytest.raises(TypeError, match="ContinualPlugin"):
        check_plugins([object()])
    assert check_plugins([Rehearsal(selection="none"), EWC()])[1].name == "ewc"
    assert ContinualPlugin().summary() == {}


def test_a_memory_is_declared_by_the_plugin_that_keeps_it():
    """Rehearsal, A-GEM and DER++ keep a memory (one per run); EWC and a switched-off rehearsal keep none. The
    declared record is the memory's own summary."""
    assert [p.keeps_memory for p in (Rehearsal(), AGEM(per_class=1), DERpp(per_class=1))] == [True] * 3
    assert not EWC().keeps_memory and not Rehearsal(selection="none").keeps_memory
    assert ContinualPlugin().memory_summary() is None
    with pytest.raises(ValueError, match="memory, agem each keep a memory"):
        check_plugins([Rehearsal(per_class=1), AGEM(per_class=1)])
    data = FakeData()
    agem = _setup(AGEM(per_class=2))
    assert agem.memory_summary() is None or agem.memory_summary()["total"] == 0
    agem.memory.update(data.ids, data.labels, task=0)
    rec = agem.memory_summary()
    assert rec["per_class"] == {"a": 2, "b": 2} and rec["total"] == 4 and rec["rule"] == "per_class"


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data, model = FakeData(n=8), _model()
        ewc = _setup(EWC(batch_size=2))
        ewc.after_task(TaskView(t=0, model=model, data=data))  # each process: every world-th batch, then averaged
        agem = _setup(AGEM(per_class=4, batch_size=4))
        agem.memory.update(data.ids, data.labels, task=0)  # the same memory in every process (as restored from file)
        agem.before_task(TaskView(t=1, model=model, data=data, seed=3))
        torch.manual_seed(100 + rank)  # different local gradients: A-GEM's reference gradient is still shared
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        agem.before_step(SimpleNamespace(_model=model, optimizer_step=0))
        torch.save({"ewc": ewc.importance}, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_importance_estimate_is_shared_and_equal_under_ddp(tmp_path):
    """Two gloo processes each estimate on half of the batches; after averaging both hold the one-process estimate
    (equal batch counts per process), so every process penalises alike."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    single = _setup(EWC(batch_size=2))
    single.after_task(TaskView(t=0, model=_model(), data=FakeData(n=8)))
    for name, value in single.importance.items():
        assert torch.equal(r0["ewc"][name], r1["ewc"][name]), name
        assert torch.allclose(r0["ewc"][name], value, atol=1e-7), name
