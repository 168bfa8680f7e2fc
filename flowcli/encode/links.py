"""Links between category columns: each linked column's level shares given another's level.

A flow learns how two categories go together poorly: their features are slices of a normal
(`dequantize.Levels`), and a pairing of levels is a rectangle with hard edges, which smooth
couplings blur towards independence (on CPS1988 a flow gave region and ethnicity almost
independent, after 60 s or 240 s of training). So at fit, the strongest pairwise dependences
between category columns are counted exactly: a Chow-Liu tree (Chow & Liu 1968), the spanning
forest of greatest mutual information, keeps for each linked column one parent and the shares
of its levels given each of the parent's levels. Where the levels of a column placed before it
still tell about the child given its parent, by more than the shares they add cost by BIC
(CPS1988: living in a city depends on region and ethnicity together), the strongest such column
joins as a second parent, and the shares are counted for each pair of the parents' levels,
drawn towards those given the first parent alone.

`LevelLinks` is then the flow's first step, fixed at fit: it moves a linked column's feature
from its level's slice of the normal under the column's own shares to the slice under the
shares given its parents' levels (decoded from their features), linearly in probability.
The step is invertible for each parent level and its log-determinant is exact, so likelihoods
stay exact, and a flow that leaves the moved features standard normal gives the rows the tree's
level probabilities. Encodings, conditions and explanations keep working on the features
before the step, where a level is the same slice in every row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from flowcli.encode.categorical import CategoricalColumn
from flowcli.encode.dequantize import Levels, ndtr, ndtri, normal_log_pdf

MAX_CELLS = 20_000  # parent levels × child levels of one link: its shares stay a small part of the manifest
SIGNIFICANCE = 1e-3  # the G-test's level: independent pairs link this rarely
SCREEN_ROWS = 20_000  # pairs are tested on at most this many rows (C² pairs of counts); the shares use all
PRIOR_STRENGTHS = 2.0 ** np.arange(-1, 11)  # rows' worth of the column's own shares behind each parent level's


def linked(columns: Sequence, table: pa.Table, source: str, held: Collection[str] = ()) -> tuple:
    """`columns` (encoders fitted on `table`), with a parent and shares given it set on the category
    columns of the Chow-Liu forest: pairs whose dependence is significant (the G-test, 2N times
    their mutual information, against χ² with (K_a − 1)(K_b − 1) degrees of freedom), taken in
    order of mutual information less its bias under independence ((K_a − 1)(K_b − 1) / 2N nats),
    both on up to SCREEN_ROWS rows; each tree is rooted at its first column in table order. A
    linked column may take a second parent among the columns placed before it (`second_parent`).

    The `held` columns (a model fitted to condition on them) take parents among themselves only,
    so that their levels are known from their own features: their forest is chosen first, then
    joined as one tree for the rest (no other column links two of them), and trees are rooted
    at a held column where they hold one."""
    categories = [i for i, column in enumerate(columns) if isinstance(column, CategoricalColumn) and len(column.probabilities) > 1]
    if len(categories) < 2 or not table.num_rows:
        return tuple(columns)
    from scipy.stats import chi2  # fitting imports torch anyway

    index = {i: columns[i].level_index(table.column(columns[i].name), source) for i in categories}
    sizes = {i: len(columns[i].probabilities) for i in categories}
    screened = np.random.default_rng(0).permutation(table.num_rows)[:SCREEN_ROWS]
    edges, n = [], len(screened)
    for position, a in enumerate(categories):
        for b in categories[position + 1:]:
            if sizes[a] * sizes[b] <= MAX_CELLS:
                joint = counts(index[a][screened], index[b][screened], sizes[a], sizes[b])
                information, freedom = mutual_information(joint), (sizes[a] - 1) * (sizes[b] - 1)
                if chi2.sf(2 * n * information, freedom) < SIGNIFICANCE:
                    edges.append((information - freedom / (2 * n), a, b))
    component = {i: i for i in categories}

    def root(i: int) -> int:
        while component[i] != i:
            i = component[i]
        return i

    kept = [i for i in categories if columns[i].name in held]
    neighbours: dict[int, list[int]] = {i: [] for i in categories}
    for among_held in (True, False):
        for _, a, b in sorted(edges, reverse=True):
            if ((a in kept and b in kept) == among_held) and root(a) != root(b):
                component[root(b)] = root(a)
                neighbours[a].append(b)
                neighbours[b].append(a)
        for i in kept:  # the held columns' forest stands as one tree for the rest
            component[root(i)] = root(kept[0])
    columns, placed, seen, first = list(columns), [], set(), {}  # categories in the order their links go; child -> parent
    for start in kept + categories:  # held columns first, then table order: each tree is rooted at its first column
        if start in seen:
            continue
        seen.add(start)
        placed.append(start)
        queue = [start]
        while queue:
            parent = queue.pop(0)
            for child in neighbours[parent]:
                if child not in seen:
                    seen.add(child)
                    placed.append(child)
                    queue.append(child)
                    first[child] = parent
    for position, child in enumerate(placed):
        if child not in first:
            continue
        parent, shares = first[child], np.asarray(columns[child].probabilities)
        one = given_parent(counts(index[parent], index[child], sizes[parent], sizes[child]), shares)
        candidates = [c for c in placed[:position] if c != parent and sizes[parent] * sizes[c] * sizes[child] <= MAX_CELLS
                      and (child not in kept or c in kept)]
        second = second_parent((index[child][screened], sizes[child]), (index[parent][screened], sizes[parent]),
                               {c: (index[c][screened], sizes[c]) for c in candidates})
        if second is None:
            columns[child] = replace(columns[child], parent=columns[parent].name, given_parent=one.tolist())
            continue
        pair = pair_levels(index[parent], index[second], sizes[second])
        both = given_parent(counts(pair, index[child], sizes[parent] * sizes[second], sizes[child]), np.repeat(one, sizes[second], axis=0))
        columns[child] = replace(columns[child], parent=columns[parent].name, second_parent=columns[second].name,
                                 given_parent=both.tolist())
    return tuple(columns)


def second_parent(child: tuple[np.ndarray, int], parent: tuple[np.ndarray, int],
                  candidates: dict[int, tuple[np.ndarray, int]]) -> int | None:
    """Of the `candidates`, the column whose levels tell most about the child's given its parent's:
    the largest conditional mutual information (by the chain rule, what the pair of levels tells
    less what the parent's alone does) less BIC's price of the shares it adds (their number,
    P1 (P2 − 1)(K − 1) with P1 the parent levels seen, times log N / 2N nats), where that is
    positive and the G-test (2N times the information against χ² with as many degrees of
    freedom) finds it significant; None when none is. BIC rather than significance alone keeps
    out dependences too weak to pay for splitting the child's level slices P2 ways more. Each
    column comes as its level indices (N,) and its number of levels."""
    from scipy.stats import chi2

    (k, size), (j, parent_size) = child, parent
    best, best_gain = None, 0.0
    for candidate, (levels, candidate_size) in candidates.items():
        rows = (k >= 0) & (j >= 0) & (levels >= 0)
        n = int(rows.sum())
        if not n:
            continue
        alone = counts(j[rows], k[rows], parent_size, size)
        pair = counts(pair_levels(j[rows], levels[rows], candidate_size), k[rows], parent_size * candidate_size, size)
        information = mutual_information(pair) - mutual_information(alone)
        freedom = int((alone.sum(axis=1) > 0).sum()) * (candidate_size - 1) * (size - 1)
        gain = information - freedom * np.log(n) / (2 * n)
        if freedom and chi2.sf(2 * n * information, freedom) < SIGNIFICANCE and gain > best_gain:
            best, best_gain = candidate, gain
    return best


def pair_levels(a: np.ndarray, b: np.ndarray, size_b: int) -> np.ndarray:
    """The index of each row's pair of levels, a * size_b + b (N,), from level indices (N,); −1
    where either has no level."""
    return np.where((a >= 0) & (b >= 0), a * size_b + b, -1)


def counts(a: np.ndarray, b: np.ndarray, size_a: int, size_b: int) -> np.ndarray:
    """Rows per pair of levels (size_a, size_b) from level indices (N,); rows without a level are left out."""
    both = (a >= 0) & (b >= 0)
    return np.bincount(a[both] * size_b + b[both], minlength=size_a * size_b).reshape(size_a, size_b).astype(np.float64)


def mutual_information(joint: np.ndarray) -> float:
    """The plug-in mutual information (nats) of a table of counts."""
    p = joint / max(joint.sum(), 1.0)
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    present = p > 0
    return float(np.sum(p[present] * np.log(p[present] / outer[present])))


def given_parent(joint: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Shares of the child's levels given each parent level (P, K), from counts (P, K): the counts
    plus `strength` rows' worth of prior `shares` (K,) or (P, K), the child's own or those given
    its first parent alone, where the strength is the one among PRIOR_STRENGTHS under which the
    rows, each left out of its own counts, are likeliest. A parent level seen in few rows so keeps
    close to the prior."""
    rows = joint.sum(axis=1, keepdims=True)
    present = joint > 0

    def left_out_log_likelihood(strength: float) -> float:
        p = (joint - 1 + strength * shares) / (rows - 1 + strength)
        return float(np.sum(joint[present] * np.log(p[present])))

    strength = max(PRIOR_STRENGTHS, key=left_out_log_likelihood)
    return (joint + strength * shares) / (rows + strength)


@dataclass(frozen=True)
class Link:
    """One linked column: features `child` and `parents` (one or two), their own level shares,
    and the child's shares given each parent level, or each pair of levels (P1 [× P2], K)."""

    child: int
    parents: tuple[int, ...]
    child_shares: np.ndarray  # (K,)
    parent_shares: tuple[np.ndarray, ...]  # (P1,) [and (P2,)]
    given_parent: np.ndarray  # (P1 [× P2], K), row j1 * P2 + j2

    def parent_level(self, u: np.ndarray) -> np.ndarray:
        """The row of `given_parent` for each row of features u (N, W): the parents' levels (N,)."""
        level = np.zeros(len(u), np.int64)
        for feature, shares in zip(self.parents, self.parent_shares):
            level = level * len(shares) + Levels(shares).decode(u[:, feature])
        return level


class LevelLinks:
    """The flow's fixed first step (see the module): features u (N, W) → v, in float64."""

    def __init__(self, links: Sequence[Link]):
        self.links = tuple(links)  # every parent's own link comes before its children's

    @classmethod
    def of(cls, columns: Sequence) -> LevelLinks | None:
        """The step for encoders `columns` (one feature each for categories), or None when none is linked."""
        feature = np.cumsum([0] + [column.width for column in columns])
        position = {column.name: i for i, column in enumerate(columns)}
        order, done = [], set()

        def place(i: int) -> None:
            parents = [position[name] for name in columns[i].parents]
            for parent in parents:
                if parent not in done:
                    place(parent)
            if i not in done:
                done.add(i)
                if parents:
                    order.append(Link(int(feature[i]), tuple(int(feature[j]) for j in parents),
                                      np.asarray(columns[i].probabilities, np.float64),
                                      tuple(np.asarray(columns[j].probabilities, np.float64) for j in parents),
                                      np.asarray(columns[i].given_parent, np.float64)))

        for i, column in enumerate(columns):
            if isinstance(column, CategoricalColumn):
                place(i)
        return cls(order) if order else None

    def forward(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features u (N, W) → moved features v (N, W) and log|dv/du| (N,)."""
        u = np.asarray(u, np.float64)
        v, log_det = u.copy(), np.zeros(len(u))
        for link in self.links:
            j, k = link.parent_level(u), Levels(link.child_shares).decode(u[:, link.child])
            v[:, link.child], step = move(u[:, link.child], _starts(link.child_shares)[k], link.child_shares[k],
                                          _starts(link.given_parent)[j, k], link.given_parent[j, k])
            log_det += step
        return v, log_det

    def inverse(self, v: np.ndarray) -> np.ndarray:
        """Moved features v (N, W) → features u (N, W): parents first, whose levels their children's slices need."""
        u = np.array(v, np.float64)
        for link in self.links:
            j, k = link.parent_level(u), np.empty(len(u), np.int64)
            for parent_level in np.unique(j):
                rows = j == parent_level
                k[rows] = Levels(link.given_parent[parent_level]).decode(u[rows, link.child])
            u[:, link.child] = move(u[:, link.child], _starts(link.given_parent)[j, k], link.given_parent[j, k],
                                    _starts(link.child_shares)[k], link.child_shares[k])[0]
        return u


def move(g: np.ndarray, start: np.ndarray, share: np.ndarray, new_start: np.ndarray, new_share: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """Feature values g (N,) in the slice [start, start + share) of probability → the same place,
    in probability, in [new_start, new_start + new_share); and log|dg'/dg| (N,). All arrays (N,)."""
    within = np.clip((ndtr(g) - start) / share, 0.0, 1.0)
    moved = ndtri(new_start + within * new_share)
    return moved, np.log(new_share) - np.log(share) + normal_log_pdf(g) - normal_log_pdf(moved)


def _starts(shares: np.ndarray) -> np.ndarray:
    """Where each level's slice begins, in probability, along the last axis of `shares`."""
    return np.cumsum(shares, axis=-1) - shares
