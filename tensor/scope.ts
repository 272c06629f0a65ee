/**
 * Step scopes: every tensor created inside `withScope` is disposed when the scope ends, unless it
 * is persistent (parameters, gradients, optimizer state) or part of the returned value. This is
 * what returns a training step's intermediate buffers to the pool.
 */

interface Disposable {
  persistent: boolean;
  disposed: boolean;
  dispose(): void;
}

class Scope {
  readonly tracked: Disposable[] = [];

  track(t: Disposable): void {
    this.tracked.push(t);
  }
}

const stack: Scope[] = [];

export function currentScope(): Scope | undefined {
  return stack[stack.length - 1];
}

/**
 * Runs `fn` in a new scope. Tensors it creates are disposed at the end, except persistent ones and
 * those reachable from the result (a tensor, an array or a plain object of tensors), which move to
 * the enclosing scope.
 */
export function withScope<T>(fn: () => T): T {
  const scope = new Scope();
  stack.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    stack.pop();
  }
  const kept = new Set<Disposable>();
  collect(result, kept);
  const parent = currentScope();
  for (const t of scope.tracked) {
    if (t.persistent || t.disposed) continue;
    if (kept.has(t)) parent?.track(t);
    else t.dispose();
  }
  return result;
}

/** Async variant of `withScope`; tensors created while awaiting inside belong to this scope too. */
export async function withScopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  const scope = new Scope();
  stack.push(scope);
  let result: T;
  try {
    result = await fn();
  } finally {
    const index = stack.lastIndexOf(scope);
    if (index >= 0) stack.splice(index, 1);
  }
  const kept = new Set<Disposable>();
  collect(result, kept);
  const parent = currentScope();
  for (const t of scope.tracked) {
    if (t.persistent || t.disposed) continue;
    if (kept.has(t)) parent?.track(t);
    else t.dispose();
  }
  return result;
}

function collect(value: unknown, into: Set<Disposable>): void {
  if (value === null || typeof value !== "object") return;
  if ("dispose" in value && "persistent" in value) {
    into.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, into);
    return;
  }
  if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collect(v, into);
  }
}
