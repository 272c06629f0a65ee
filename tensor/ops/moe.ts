/**
 * Mixture-of-experts ops: top-k selection, column and row gathers, the scatter-add that combines
 * expert outputs per token, capacity dropping, sorting assignments by expert, and the grouped
 * matrix product that runs every expert on its contiguous rows. Each differentiable op records
 * its gradient rule beside the forward call; the integer outputs (indices, plans) carry none.
 */

import { Tensor } from "../tensor.ts";
import { formatShape, ShapeError } from "../shape.ts";
import { transpose } from "./layout.ts";

function checkIndex(op: string, name: string, t: Tensor): void {
  if (t.dtype !== "i32") throw new ShapeError(`${op}: ${name} must be i32, got ${t.describe()}`);
}

function lastAxis(x: Tensor): { rows: number; cols: number } {
  const cols = x.shape[x.rank - 1];
  return { rows: cols === 0 ? 0 : x.size / cols, cols };
}

/**
 * Selects the k largest entries along the last axis, largest first, with ties to the lower index.
 * Returns i32 `indices` and `values` of shape [..., k]; the gradient flows through `values`.
 */
export function topK(scores: Tensor, k: number): { indices: Tensor; values: Tensor } {
  if (scores.rank < 1) throw new ShapeError(`topK: scores must have rank ≥ 1, got []`);
  const { rows, cols } = lastAxis(scores);
  const backend = scores.backend;
  const out = backend.topK(scores.storage, rows, cols, k);
  const shape = [...scores.shape.slice(0, -1), k];
  const indices = Tensor.fromStorage(backend, out.indices, shape, "i32");
  const values = Tensor.fromOp(out.values, shape, [scores], "topK", (dy) => [
    Tensor.fromStorage(
      backend,
      backend.scatterColumns(dy.storage, indices.storage, rows, cols, k),
      scores.shape,
    ),
  ]);
  return { indices, values };
}

/** `x[..., indices[..., j]]`: entries of x picked along the last axis by i32 `indices` [..., k]. */
export function gatherColumns(x: Tensor, indices: Tensor): Tensor {
  checkIndex("gatherColumns", "indices", indices);
  const { rows, cols } = lastAxis(x);
  const k = indices.shape[indices.rank - 1];
  if (indices.rank !== x.rank || indices.size !== rows * k) {
    throw new ShapeError(
      `gatherColumns: indices ${formatShape(indices.shape)} must match x ` +
        `${formatShape(x.shape)} on every axis but the last`,
    );
  }
  const backend = x.backend;
  const out = backend.gatherColumns(x.storage, indices.storage, rows, cols, k);
  return Tensor.fromOp(out, indices.shape, [x], "gatherColumns", (dy) => [
    Tensor.fromStorage(
      backend,
      backend.scatterColumns(dy.storage, indices.storage, rows, cols, k),
      x.shape,
    ),
  ], x.dtype);
}

/**
 * Rows `x[index[i]]` of x [n, ...] as [m, ...]; a negative index gives a zero row. The gradient
 * is a scatter-add over `index`, or, when `inverse` is given (index is injective and
 * `inverse[index[i]] = i`, −1 for rows nothing picks), a gather by `inverse`, which is cheaper.
 */
export function gatherRows(x: Tensor, index: Tensor, options: { inverse?: Tensor } = {}): Tensor {
  checkIndex("gatherRows", "index", index);
  if (x.rank < 1 || index.rank !== 1) {
    throw new ShapeError(
      `gatherRows: needs x [n, ...] and index [m], got ${x.describe()} and ${index.describe()}`,
    );
  }
  const n = x.shape[0];
  const cols = n === 0 ? 0 : x.size / n;
  const m = index.size;
  const backend = x.backend;
  const out = backend.gatherRows(x.storage, index.storage, n, m, cols);
  const inverse = options.inverse;
  return Tensor.fromOp(out, [m, ...x.shape.slice(1)], [x], "gatherRows", (dy) => {
    const dx = inverse === undefined
      ? backend.scatterAddRows(dy.storage, index.storage, m, n, cols)
      : backend.gatherRows(dy.storage, inverse.storage, m, n, cols);
    return [Tensor.fromStorage(backend, dx, x.shape)];
  }, x.dtype);
}

/** Sums rows of x [m, ...] into a zero [n, ...] at rows `index[i]`, skipping negative indices. */
export function scatterAddRows(x: Tensor, index: Tensor, n: number): Tensor {
  checkIndex("scatterAddRows", "index", index);
  if (x.rank < 1 || index.rank !== 1 || index.size !== x.shape[0]) {
    throw new ShapeError(
      `scatterAddRows: needs x [m, ...] and index [m], got ${x.describe()} and ` +
        `${index.describe()}`,
    );
  }
  const m = x.shape[0];
  const cols = m === 0 ? x.size : x.size / m;
  const backend = x.backend;
  const out = backend.scatterAddRows(x.storage, index.storage, m, n, cols);
  return Tensor.fromOp(out, [n, ...x.shape.slice(1)], [x], "scatterAddRows", (dy) => [
    Tensor.fromStorage(backend, backend.gatherRows(dy.storage, index.storage, n, m, cols), x.shape),
  ]);
}

/**
 * Expert ids [count] with −1 wherever an assignment ranks at or past `capacity` among those of
 * its expert: by descending `priority` when given, else by position, ties by position.
 */
export function dropOverCapacity(
  experts: Tensor,
  numExperts: number,
  capacity: number,
  priority: Tensor | null = null,
): Tensor {
  checkIndex("dropOverCapacity", "experts", experts);
  const count = experts.size;
  const out = experts.backend.dropOverCapacity(
    experts.storage,
    priority?.storage ?? null,
    count,
    numExperts,
    capacity,
  );
  return Tensor.fromStorage(experts.backend, out, [count], "i32");
}

/** The expert-sorted layout of assignments; see `Backend.sortByExpert`. */
export interface ExpertOrder {
  /** i32 [count]: the assignment at each sorted row, −1 past the last kept one. */
  order: Tensor;
  /** i32 [count]: the sorted row of each assignment, −1 for empty ones. */
  positions: Tensor;
  /** i32 [numExperts + 1]: where each expert's rows start. */
  offsets: Tensor;
}

/** Sorts assignments by expert id, keeping position order within an expert. */
export function sortByExpert(experts: Tensor, numExperts: number): ExpertOrder {
  checkIndex("sortByExpert", "experts", experts);
  const count = experts.size;
  const backend = experts.backend;
  const out = backend.sortByExpert(experts.storage, count, numExperts);
  return {
    order: Tensor.fromStorage(backend, out.order, [count], "i32"),
    positions: Tensor.fromStorage(backend, out.positions, [count], "i32"),
    offsets: Tensor.fromStorage(backend, out.offsets, [numExperts + 1], "i32"),
  };
}

/**
 * Per-expert products over contiguous row groups: row r of x [rows, dIn] in group e becomes
 * `w[e] · x[r]`, with w [numExperts, dOut, dIn]; rows past the last group are 0.
 */
export function groupedMatmul(x: Tensor, w: Tensor, offsets: Tensor): Tensor {
  checkIndex("groupedMatmul", "offsets", offsets);
  if (x.rank !== 2 || w.rank !== 3 || w.shape[2] !== x.shape[1]) {
    throw new ShapeError(
      `groupedMatmul: needs x [rows, dIn] and w [experts, dOut, dIn], got ` +
        `${formatShape(x.shape)} and ${formatShape(w.shape)}`,
    );
  }
  const [rows, dIn] = x.shape;
  const [numExperts, dOut] = w.shape;
  if (offsets.size !== numExperts + 1) {
    throw new ShapeError(
      `groupedMatmul: offsets ${formatShape(offsets.shape)} must have ${numExperts + 1} entries`,
    );
  }
  const backend = x.backend;
  const y = backend.groupedMatmul(
    x.storage,
    w.storage,
    offsets.storage,
    rows,
    numExperts,
    dIn,
    dOut,
  );
  return Tensor.fromOp(y, [rows, dOut], [x, w], "groupedMatmul", (dy) => {
    // dx[r] = w[e]ᵀ · dy[r]: the same product with each expert's matrix transposed.
    const dx = x.requiresGrad ? groupedMatmul(dy, transpose(w, 1, 2), offsets) : null;
    const dw = w.requiresGrad
      ? Tensor.fromStorage(
        backend,
        backend.groupedMatmulWeightGrad(
          dy.storage,
          x.storage,
          offsets.storage,
          rows,
          numExperts,
          dIn,
          dOut,
        ),
        w.shape,
      )
      : null;
    return [dx, dw];
  });
}
