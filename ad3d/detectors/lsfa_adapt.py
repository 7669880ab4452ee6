"""LSFA's adaptation: the adaptor networks, their four self-supervised losses per batch, and the training
loop with its early stop on held-out normal scans. A part of the `lsfa` detector (mixed into `LSFA`)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ad3d.nn.adaptor import Adaptor, compactness, info_nce


class Adaptation:
    """The adaptation half of `LSFA`: reads its parameters (modalities, losses, weights, warm-up, queue,
    batch) and sets `net_`."""

    def _build_net(self) -> nn.ModuleDict:
        torch.manual_seed(self.seed)

        return nn.ModuleDict({m: Adaptor(self.dims_[m], self.proj_dim) for m in self.reads})

    def _adapted(self, tokens: dict, net=None) -> dict:
        net = net or self.net_
        with torch.no_grad():
            return {
                m: (net[m](torch.from_numpy(tokens[m]).float()[None])[0].numpy() if self.adapt else tokens[m])
                for m in self.reads
            }

    def _loss(self, net, batch: list[dict], rotated: list[dict], queues: dict, step: int, rng) -> torch.Tensor:
        """ad3d's: every term per scan, all averaged over the batch. losses='release': the InfoNCE terms once
        over every patch of the batch (negatives from the other scans too), the compactness terms averaged
        over the scans, the global term added, as `fusion_pretrain.py` sums them."""
        release = self.losses == "release"
        clamp = 50.0 if release else None
        loss, compact, means = 0.0, [], {m: [] for m in self.reads}
        pooled = {"rgb": [], "xyz": [], "turned": []}  # losses='release': the batch's patches, pooled
        for item, turned in zip(batch, rotated):
            adapted = {m: net[m](torch.from_numpy(item[m]).float()[None])[0] for m in self.reads}
            projected = {m: net[m].head(adapted[m]) for m in self.reads}
            valid = torch.from_numpy(item["valid"])
            other = None
            if "rgb" in self.reads and self.rotation_weight:
                other = net["rgb"].head(net["rgb"](torch.from_numpy(turned["rgb"]).float()[None])[0])
            if release:
                if len(self.reads) == 2:
                    pooled["rgb"].append(projected["rgb"][valid])
                    pooled["xyz"].append(projected["xyz"][valid])
                if other is not None:
                    pooled["turned"].append((projected["rgb"], other))
            else:
                loss = self._contrast(loss, projected.get("rgb"), projected.get("xyz"), valid, other, rng)
            mine = queues.setdefault(item.get("category", ""), {m: {"local": [], "global": []} for m in self.reads})
            for m in self.reads:  # compactness against the queues of the scan's own category
                local, queue = (adapted[m][valid] if m == "xyz" else adapted[m]), mine[m]
                if step >= self.warmup and len(queue["local"]) and self.compactness_weight:
                    q_local = torch.from_numpy(np.concatenate(queue["local"]))
                    q_global = torch.from_numpy(np.stack(queue["global"]))
                    term = self.compactness_weight * (
                        compactness(local, q_local, clamp)
                        + 0.4 * compactness(local.mean(0, keepdim=True), q_global, clamp)
                    )
                    if release:
                        compact.append(term)
                    else:
                        loss = loss + term
                means[m].append(net[m].head(local.mean(0)))
                queue["local"].append(local.detach().numpy())
                queue["global"].append(local.mean(0).detach().numpy())
                while sum(len(q) for q in queue["local"]) > self.queue_size:
                    queue["local"].pop(0)
                    queue["global"].pop(0)
        if len(self.reads) == 2 and self.global_weight and len(batch) > 1:
            loss = loss + self.global_weight * info_nce(
                torch.stack(means["rgb"]), torch.stack(means["xyz"]), self.temperature, release
            )
        if not release:
            return loss / len(batch)
        rgb = torch.cat(pooled["rgb"]) if pooled["rgb"] else None
        xyz = torch.cat(pooled["xyz"]) if pooled["xyz"] else None
        turned = [torch.cat(side) for side in zip(*pooled["turned"])] if pooled["turned"] else (None, None)
        everywhere = None if rgb is None else torch.ones(len(rgb), dtype=torch.bool)
        loss = self._contrast(loss, rgb, xyz, everywhere, turned[1], rng, turned[0])
        return loss + (sum(compact) / len(compact) if compact else 0.0)

    def _contrast(self, loss, rgb, xyz, valid, other, rng, rgb_all=None):
        """`loss` plus the local cross-modal InfoNCE over the patches that hold points, plus the rotation term
        on a random sixth of the RGB patches (`rgb_all`, default `rgb`) against their block-rotated copies."""
        release = self.losses == "release"
        if rgb is not None and xyz is not None and valid.sum() > 1:
            loss = loss + info_nce(rgb[valid], xyz[valid], self.temperature, release)
        if other is not None:
            mine = rgb if rgb_all is None else rgb_all
            pick = torch.from_numpy(rng.choice(len(other), max(2, len(other) // 6), replace=False))
            loss = loss + self.rotation_weight * info_nce(mine[pick], other[pick], self.temperature, release)
        return loss

    def _train(self, train: list[dict], rotated: list[dict], held: list[dict], progress: bool) -> None:
        from tqdm import tqdm

        rng = np.random.default_rng(self.seed)
        net = self._build_net()
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, betas=(0.9, 0.95))
        queues: dict = {}  # category -> modality -> FIFO queues of local and global features
        best, best_state = float("inf"), copy.deepcopy(net.state_dict())
        for step in tqdm(range(self.iterations), desc="lsfa adapt", disable=not progress, leave=False):
            net.train()
            optimiser.zero_grad()
            stepped = False
            for _ in range(self.accumulate):  # the release: 16 batches of 8 scans per step
                pick = rng.choice(len(train), min(self.batch_size, len(train)), replace=False)
                loss = self._loss(net, [train[i] for i in pick], [rotated[i] for i in pick], queues, step, rng)
                if torch.is_tensor(loss):  # point-only before the warm-up: no term applies yet
                    (loss / self.accumulate).backward()
                    stepped = True
            if stepped:
                optimiser.step()
            if held and ((step + 1) % 25 == 0 or step + 1 == self.iterations):  # early stop on held-out normals
                net.eval()
                with torch.no_grad():
                    frozen = {
                        c: {m: {k: list(v) for k, v in q.items()} for m, q in by_m.items()}
                        for c, by_m in queues.items()
                    }
                    # the held scan stands in for its own rotated copy: the rotation term is left out of
                    # the stopping criterion (its value there is that of identical features). The criterion
                    # always holds the compactness term: one measured without it, before the warm-up, would
                    # be lower than every later one and always win
                    after_warmup = max(step, self.warmup)
                    val = float(self._loss(net, held, held, frozen, after_warmup, np.random.default_rng(0)))
                if val < best:
                    best, best_state = val, copy.deepcopy(net.state_dict())
        if held:
            net.load_state_dict(best_state)
        self.net_ = net.eval()
