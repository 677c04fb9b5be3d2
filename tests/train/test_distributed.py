"""train.distributed on 2 real ranks (gloo on loopback, started by torch's launcher as `onen train --nproc 2` starts
them): the samplers' shards, a gathered evaluation, DDP replicas of a tiny model without batch norm against one
process. A failing rank: tests/train/test_distributed_training.py."""

from __future__ import annotations

import distributed_ranks as ranks
import numpy as np
import pytest
import torch

from onen.train import distributed

RANKS = 2


@pytest.fixture(scope="module")
def answers() -> dict:
    """One job of 2 ranks running every helper (distributed_ranks.helpers); rank 0's answer holds both ranks'."""
    return distributed.launch(RANKS, ranks.helpers)


def test_sampler_shards_are_disjoint_and_together_complete_every_epoch(answers):
    per_rank = [answer["shards"] for answer in answers["ranks"]]
    for epoch in (0, 1):
        even = [shards[8][epoch] for shards in per_rank]
        assert len(even[0]) == len(even[1]) == 4
        assert set(even[0]).isdisjoint(even[1]) and sorted(even[0] + even[1]) == list(range(8))
        # 7 items on 2 ranks: one shard is padded with one item of the other, so both make the same steps
        odd = [shards[7][epoch] for shards in per_rank]
        assert len(odd[0]) == len(odd[1]) == 4
        assert set(odd[0]) | set(odd[1]) == set(range(7)) and len(set(odd[0]) & set(odd[1])) == 1
    assert per_rank[0][8][0] != per_rank[0][8][1]  # set_epoch: another order each epoch
    # the order is one process's shuffled order for that seed and epoch, dealt out rank by rank
    single = [
        int(i) for batch in distributed.loader(ranks.TinyImages(8), 8, True, seed=3, epoch=1) for i in batch["index"]
    ]
    assert per_rank[0][8][1] == single[0::2] and per_rank[1][8][1] == single[1::2]


def test_a_sharded_evaluation_gives_every_rank_all_rows_in_data_set_order(answers):
    gathered = answers["gathered"]
    assert gathered["index"].tolist() == list(range(7))
    assert torch.equal(gathered["square"], torch.arange(7) ** 2)
    assert gathered["rank"].tolist() == [0, 1, 0, 1, 0, 1, 0]  # both ranks computed their part
    assert answers["sums"] == (3.0, 2.0)


def test_replicas_stay_identical_and_match_one_process_with_the_whole_batch(answers):
    first, second = (answer["weights"] for answer in answers["ranks"])
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
    single = ranks.train_tiny()  # this process: batch 8 per step where each rank took 4
    start = ranks.tiny_model().state_dict()
    for name, value in first.items():
        assert not torch.allclose(value, start[name])  # it trained
        np.testing.assert_allclose(value.numpy(), single[name].numpy(), rtol=0, atol=1e-6, err_msg=name)
