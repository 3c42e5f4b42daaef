// A hard memory limit for one process, from a memory cgroup of its own (cgroup v1's memory
// controller, or cgroup v2's `memory.max`). Needs root. `prlimit --as` would limit address
// space (thread stacks, allocator reservations), not memory used, so it is not used.
//
// The page cache of the files a process writes is charged to its group too, but the kernel
// reclaims it under the limit instead of killing: `failcnt` counts those hits, so a kill is
// read from the group's OOM-kill counter (and the process's SIGKILL), not from `failcnt`.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync, chmodSync } from "node:fs";
import { dirname, join } from "node:path";

const ROOT = "/sys/fs/cgroup";

/** Why no memory cgroup can be made here, or null when one can. */
export function cgroupUnavailable() {
  if (process.getuid?.() !== 0) return "memory cgroups need root (the test runs as uid " + process.getuid?.() + ")";
  if (existsSync(join(ROOT, "memory", "memory.limit_in_bytes"))) return null;
  if (existsSync(join(ROOT, "cgroup.controllers"))) {
    const controllers = readFileSync(join(ROOT, "cgroup.controllers"), "utf8");
    return controllers.split(/\s+/).includes("memory") ? null : "cgroup v2 without the memory controller";
  }
  return `no memory cgroup controller under ${ROOT} (neither v1 memory/ nor v2 cgroup.controllers)`;
}

/**
 * Creates a memory cgroup limited to `limitBytes`, named `prefix-<pid>-<n>`. Returns
 * `{ dir, wrap(bin, dir), stats(), remove() }`: `wrap` writes a launcher script that moves
 * itself into the group and then execs `bin`, so the process is limited from its first
 * instruction; `stats()` reads `{ usage, peak, failcnt, oomKills }`; `remove()` deletes the
 * group once its processes have exited (retrying briefly, as the kernel frees it lazily).
 * Throws with the reason when cgroups are unavailable: a limit that cannot be set must fail
 * the test, not skip it.
 */
export function memoryCgroup(limitBytes, prefix = "brain-test") {
  const why = cgroupUnavailable();
  if (why) throw new Error(`cannot limit the server's memory: ${why}`);
  const name = `${prefix}-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
  const v1 = existsSync(join(ROOT, "memory", "memory.limit_in_bytes"));
  const dir = v1 ? join(ROOT, "memory", name) : join(ROOT, name);
  if (!v1) {
    // v2: the memory controller must be enabled for the root's children.
    const sub = join(ROOT, "cgroup.subtree_control");
    if (!readFileSync(sub, "utf8").split(/\s+/).includes("memory")) writeFileSync(sub, "+memory");
  }
  removeStale(dirname(dir), prefix);
  mkdirSync(dir);
  const file = (v1name, v2name) => join(dir, v1 ? v1name : v2name);
  writeFileSync(file("memory.limit_in_bytes", "memory.max"), String(limitBytes));
  // v2 with swap accounting: no swap either, so the limit is a hard one (v1 has no swap here).
  if (!v1 && existsSync(join(dir, "memory.swap.max"))) writeFileSync(join(dir, "memory.swap.max"), "0");
  const num = (path) => (existsSync(path) ? Number(readFileSync(path, "utf8").trim()) : NaN);
  const field = (path, key) => {
    if (!existsSync(path)) return NaN;
    const m = readFileSync(path, "utf8").match(new RegExp(`^${key} (\\d+)$`, "m"));
    return m ? Number(m[1]) : NaN;
  };
  return {
    dir,
    limitBytes,
    /** A launcher for `bin` that joins this group and then execs it (written into `into`). */
    wrap(bin, into) {
      const path = join(into, `in-cgroup-${name}.sh`);
      writeFileSync(path, `#!/bin/sh\necho $$ > '${join(dir, "cgroup.procs")}' || exit 70\nexec '${bin}' "$@"\n`);
      chmodSync(path, 0o755);
      return path;
    },
    stats() {
      return {
        usage: num(file("memory.usage_in_bytes", "memory.current")),
        peak: num(file("memory.max_usage_in_bytes", "memory.peak")),
        failcnt: v1 ? num(join(dir, "memory.failcnt")) : field(join(dir, "memory.events"), "max"),
        oomKills: v1 ? field(join(dir, "memory.oom_control"), "oom_kill") : field(join(dir, "memory.events"), "oom_kill"),
      };
    },
    async remove() {
      for (let i = 0; i < 50; i++) {
        try {
          rmdirSync(dir);
          return;
        } catch (e) {
          if (e.code === "ENOENT") return;
          if (e.code !== "EBUSY") throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      throw new Error(`memory cgroup ${dir} still busy: remove it by hand (rmdir)`);
    },
  };
}

/** Removes groups `prefix-<pid>-…` left by a run that was killed before its clean-up (its pid
 * gone, the group empty). */
function removeStale(parent, prefix) {
  for (const name of readdirSync(parent)) {
    const m = name.match(new RegExp(`^${prefix}-(\\d+)-\\d+$`));
    if (!m || existsSync(`/proc/${m[1]}`)) continue;
    try {
      rmdirSync(join(parent, name));
    } catch {
      // still has processes, or already gone: leave it
    }
  }
}
