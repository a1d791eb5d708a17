"""GLEAM-C training across processes: the all-gather loss on 2 gloo ranks equals the single-process loss on the
concatenated batch (value, feature gradients, parameter gradients), and a short 2-process run lowers the loss."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel as DDP

from gleam_ros.core.encoder import GleamEncoder, ModelCard
from training.config import config_from_dict
from training.distributed import DistContext, allreduce_mean_, sum_allreduce_hook
from training.gleam_c import MultiView, forward_features, run_training
from training.losses import SymmetricInfoNCE, gather_labels, gather_with_grad
from training.synthetic import tiny_config, write_pairs_folder

WORLD = 2
CPU = torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))


def _tiny_model() -> GleamEncoder:
    torch.manual_seed(0)
    card = ModelCard(backbone="test_efficientnet", input_size=32, embed_dim=16, pretrained="none", name="t")
    # eval mode: batch norm uses running statistics, so a rank's half batch is embedded exactly as in the whole batch
    return GleamEncoder(card).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(8, 3, 32, 32, generator=g)
    r = torch.randn(8, 3, 32, 32, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])  # a repeated place: soft multi-positive targets
    return q, r, labels


def _step(net, loss_fn, q, r, labels):
    n = q.shape[0]
    feats = forward_features(net, list(q) + list(r), ["q"] * n + ["r"] * n, CPU)
    qf, rf = feats[:n], feats[n:]
    qf.retain_grad()
    rf.retain_grad()
    loss = loss_fn(gather_with_grad(qf), gather_with_grad(rf), gather_labels(labels))
    loss.backward()
    return loss, qf.grad, rf.grad


def _worker(rank: int, world: int, port: int, out: str, cfg: dict) -> None:
    """One rank: the all-gather step on a fixed batch (results to a file), then a short training run."""
    _env(rank, world, port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _tiny_model()
        net = DDP(MultiView(model))
        net.register_comm_hook(None, sum_allreduce_hook)
        loss_fn = SymmetricInfoNCE()
        q, r, lab = _batch()
        b = q.shape[0] // world
        sl = slice(rank * b, (rank + 1) * b)
        loss, gq, gr = _step(net, loss_fn, q[sl], r[sl], lab[sl])
        allreduce_mean_(loss_fn.logit_scale.grad, DistContext(rank, world, rank, CPU, "gloo"))
        t = {"loss": loss.detach().reshape(1), "gq": gq, "gr": gr, "gscale": loss_fn.logit_scale.grad.reshape(1)}
        t.update({f"p.{k}": p.grad for k, p in model.named_parameters()})
        save_file({k: v.contiguous() for k, v in t.items()}, str(Path(out) / f"rank{rank}.safetensors"))
        res = run_training(config_from_dict(cfg))  # joins the existing 2-rank group
        assert res["status"] == "done"
    finally:
        dist.destroy_process_group()


EPOCHS = 5
N_TRAIN = 32


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    data = write_pairs_folder(tmp / "data", n_train=N_TRAIN, n_test=4)
    phases = [{"name": "p1", "datasets": ["a"], "epochs": EPOCHS, "batch_size": 4, "lr": 1e-3, "warmup": 0,
               "hard_negatives": {"enabled": True, "neighbours": 2, "pool": 4},
               "augment": {"photometric": 0.0, "ref_photometric": 0.0, "flip": 0.0, "rot90": 0.0}}]
    cfg = tiny_config(tmp / "run", {"a": {"type": "pairs_folder", "root": str(data)}}, phases)
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp), cfg), nprocs=WORLD, join=True)
    return tmp


def test_allgather_loss_and_gradients_match_single_process(two_ranks):
    model = _tiny_model()
    loss_fn = SymmetricInfoNCE()
    q, r, lab = _batch()
    loss, gq, gr = _step(MultiView(model), loss_fn, q, r, lab)
    ref = {f"p.{k}": p.grad for k, p in model.named_parameters()}
    b = q.shape[0] // WORLD
    for rank in range(WORLD):
        got = load_file(str(two_ranks / f"rank{rank}.safetensors"))
        assert torch.allclose(got["loss"], loss.detach().reshape(1), rtol=0, atol=1e-6)
        sl = slice(rank * b, (rank + 1) * b)
        assert torch.allclose(got["gq"], gq[sl], rtol=1e-5, atol=1e-7)
        assert torch.allclose(got["gr"], gr[sl], rtol=1e-5, atol=1e-7)
        assert torch.allclose(got["gscale"], loss_fn.logit_scale.grad.reshape(1), rtol=1e-5, atol=1e-7)
        for k, g in ref.items():
            assert torch.allclose(got[k], g, rtol=1e-4, atol=1e-6), k
    assert float(gq.abs().sum()) > 0 and any(float(g.abs().sum()) > 0 for g in ref.values())


def test_two_process_training_lowers_the_loss(two_ranks):
    rows = list(csv.DictReader((two_ranks / "run" / "log.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == EPOCHS * (N_TRAIN // 8)  # global batch 8 = 4 per rank x 2 ranks
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.3, losses
    assert (two_ranks / "run" / "final" / "model.safetensors").is_file()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
