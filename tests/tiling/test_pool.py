"""The worker pool's share of a batch: pieces of whole chunks, joined back into one batch in order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_her2.tiling.pool import joined, piece_tiles, pieces


@dataclass(frozen=True)
class _Job:
    indices: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    offset: int = 0


def _result(n: int, first: int, **extra: object) -> dict[str, object]:
    ids = np.arange(first, first + n)
    return {"kept": ids % 2 == 0, "fractions": ids / 10.0, "blur": ids * 1.0, "measurements": {}, "arrays": {},
            **extra}  # fmt: skip


def test_every_worker_gets_a_piece_of_whole_chunks() -> None:
    assert piece_tiles(64, 2, 8) == 32  # two workers, two pieces
    assert piece_tiles(256, 14, 8) == 24  # eleven pieces for fourteen workers
    assert piece_tiles(16, 2, 8) == 16 and piece_tiles(7, 2, 8) == 16  # never under two chunks
    job = _Job(np.arange(10, 60), np.arange(50) * 2, np.arange(50) * 3)
    parts = pieces(job, 24)
    assert [(p.offset, len(p.indices)) for p in parts] == [(0, 24), (24, 24), (48, 2)]
    assert np.array_equal(np.concatenate([p.xs for p in parts]), job.xs)


def test_pieces_join_in_order_and_values_a_piece_lacks_are_nan_or_none() -> None:
    a = _result(3, 0, measurements={"n": np.array([1.0, 2.0, 3.0])}, arrays={"rows": [np.ones(1), None, np.ones(2)]})
    b = _result(2, 3)  # its tile function returned nothing for these tiles
    c = _result(1, 5, measurements={"m": np.array([7.0])}, arrays={"rows": [np.zeros(3)]})
    out = joined([a, b, c], [3, 2, 1])
    assert np.array_equal(out["fractions"], np.arange(6) / 10.0) and out["kept"].tolist() == [1, 0, 1, 0, 1, 0]
    assert np.array_equal(out["measurements"]["n"], [1, 2, 3, np.nan, np.nan, np.nan], equal_nan=True)
    assert np.array_equal(out["measurements"]["m"], [np.nan] * 5 + [7.0], equal_nan=True)
    assert [None if r is None else len(r) for r in out["arrays"]["rows"]] == [1, None, 2, None, None, 3]
    assert joined([a], [3]) is a
