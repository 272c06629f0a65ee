/**
 * Claim files that let several processes (shards, SLURM array tasks) share one results folder:
 * a process runs a run only while it holds `<run id>.lock` beside the run directory.
 *
 * A lock is created with `createNew`, which fails when the file exists, so exactly one process
 * wins a claim, also over NFS v3 and later. The file holds the owner's host name and process id.
 * A lock left by a process that died on this host is removed and claimed again. A lock from
 * another host cannot be checked, so it stays until someone deletes it.
 */

import { hostname } from "node:os";

/** A held claim; `release` deletes the file. */
export interface RunLock {
  path: string;
  release(): void;
}

interface LockOwner {
  host: string;
  pid: number;
  startedAt: string;
}

const held = new Set<string>();

/**
 * Creates the lock file at `path`. Returns the lock, or the owner of the existing lock when
 * another live process holds it.
 */
export async function claimLock(path: string): Promise<RunLock | { heldBy: string }> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const owner: LockOwner = {
      host: hostname(),
      pid: Deno.pid,
      startedAt: new Date().toISOString(),
    };
    try {
      await Deno.writeTextFile(path, JSON.stringify(owner) + "\n", { createNew: true });
      held.add(path);
      return { path, release: () => releaseLock(path) };
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }

    const existing = await readOwner(path);
    if (existing === undefined || !isStale(existing)) {
      const who = existing === undefined
        ? "an unreadable owner"
        : `process ${existing.pid} on ${existing.host} since ${existing.startedAt}`;
      return { heldBy: who };
    }
    // The owner died on this host, so its claim is void.
    await Deno.remove(path).catch(() => {});
  }
  return { heldBy: "another process that claimed it after a stale lock was removed" };
}

/** Deletes every lock this process holds; for exit paths such as Ctrl-C. */
export function releaseAllLocks(): void {
  for (const path of [...held]) releaseLock(path);
}

function releaseLock(path: string): void {
  if (!held.delete(path)) return;
  try {
    Deno.removeSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as LockOwner;
  } catch {
    // A lock being written right now can be empty for a moment.
    return undefined;
  }
}

function isStale(owner: LockOwner): boolean {
  if (owner.host !== hostname()) return false;
  if (owner.pid === Deno.pid) return false;
  // /proc exists on Linux only; elsewhere a lock is never treated as stale.
  try {
    Deno.statSync("/proc/self");
  } catch {
    return false;
  }
  try {
    Deno.statSync(`/proc/${owner.pid}`);
    return false;
  } catch {
    return true;
  }
}
