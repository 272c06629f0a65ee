/**
 * Reverse-mode differentiation over the graph that ops record in `Tensor.node`.
 *
 * `backward(loss)` visits the graph in reverse topological order, sums the gradient contributions
 * that reach each tensor, and accumulates into `.grad` of the leaves that require a gradient, so
 * several backward calls (micro-batches) add up until the optimizer zeroes them.
 */

import { add } from "./ops/elementwise.ts";
import { noGrad, Tensor } from "./tensor.ts";
import { formatShape } from "./shape.ts";

/** Topological order of the tensors that `root` depends on through recorded nodes. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Iterative depth-first search: deep models would overflow the call stack when recursive.
  const stack: { tensor: Tensor; expanded: boolean }[] = [{ tensor: root, expanded: false }];
  while (stack.length > 0) {
    const top = stack.pop()!;
    if (top.expanded) {
      order.push(top.tensor);
      continue;
    }
    if (visited.has(top.tensor)) continue;
    visited.add(top.tensor);
    stack.push({ tensor: top.tensor, expanded: true });
    for (const input of top.tensor.node?.inputs ?? []) {
      if (input.requiresGrad && !visited.has(input)) stack.push({ tensor: input, expanded: false });
    }
  }
  return order;
}

/**
 * Back-propagates from `root`. A scalar root gets the seed gradient 1; any other root needs an
 * explicit `seed` of its shape.
 */
export function backward(root: Tensor, seed?: Tensor): void {
  if (!root.requiresGrad) {
    throw new Error(
      `backward: ${root.describe()} does not require a gradient; no parameter contributed to it`,
    );
  }
  if (seed === undefined && root.size !== 1) {
    throw new Error(
      `backward: root has shape ${formatShape(root.shape)}; pass a seed gradient of that shape`,
    );
  }

  noGrad(() => {
    const grads = new Map<Tensor, Tensor>();
    grads.set(root, seed ?? Tensor.full(root.backend, root.shape, 1));

    const order = topologicalOrder(root);
    for (let i = order.length - 1; i >= 0; i--) {
      const tensor = order[i];
      const dy = grads.get(tensor);
      if (dy === undefined) continue;

      if (tensor.node === null) {
        accumulateLeaf(tensor, dy);
        continue;
      }
      const inputGrads = tensor.node.backward(dy);
      tensor.node.inputs.forEach((input, j) => {
        const g = inputGrads[j];
        if (g === null || g === undefined || !input.requiresGrad) return;
        if (g.size !== input.size) {
          throw new Error(
            `backward of ${tensor.node!.op}: gradient ${formatShape(g.shape)} does not match ` +
              `input ${formatShape(input.shape)}`,
          );
        }
        const previous = grads.get(input);
        grads.set(input, previous === undefined ? g : add(previous, g));
      });
    }
  });
}

/** Adds a gradient into a leaf's persistent `.grad`. */
function accumulateLeaf(leaf: Tensor, dy: Tensor): void {
  const sameShape = dy.shape.every((d, i) => d === leaf.shape[i]) && dy.rank === leaf.rank;
  const g = sameShape ? dy : dy.reshape(leaf.shape);
  if (leaf.grad === null) {
    // A detached view, so the gradient outlives the step's scope while the step's own views die.
    leaf.grad = g.detach();
  } else {
    const sum = add(leaf.grad, g);
    leaf.grad.dispose();
    leaf.grad = sum;
  }
  leaf.grad.persistent = true;
  leaf.grad.name = `${leaf.name || "tensor"}.grad`;
}
