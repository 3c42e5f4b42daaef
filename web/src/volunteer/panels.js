// The page's panel cache: A row panels and B column panels kept between tasks, so a tile that
// shares a panel with an earlier one arrives without it. The server decides what the cache
// holds (server/src/panels.rs keeps an exact model per connection): each `task_assigned`
// names its panels (`a_key`, `b_key`), omits those this page should hold, and lists keys to
// drop (`evict`). Pure bookkeeping, so it is unit-tested in Node.
//
// Invariant: after `resolve(task)` this cache equals the server's model, as long as both
// start empty on each connection and see the same tasks in order. The server's model only
// changes on delivery, so resolving on arrival (not when a thread picks the task up) is what
// keeps them in step.

/** Panels kept across tasks, addressed by the server's keys (`<job>:a:<row>`, `<job>:b:<col>`). */
export class PanelCache {
  /**
   * `budgetBytes`: what the page announces at `register_worker`. `onDrop(keys)` hears of every
   * key that leaves (`null`: all of them), so that copies kept elsewhere (the compute threads')
   * can follow.
   */
  constructor(budgetBytes, { onDrop = () => {} } = {}) {
    this.budget = budgetBytes;
    this.onDrop = onDrop;
    this.used = 0;
    /**
     * Each panel's size as it came: a buffer the page has since moved to a compute thread
     * (see `detached`) reads as empty, and the budget still counts it, as the server does.
     */
    this.sizes = new Map();
    // Least recently used first (a Map iterates in insertion order), as the server orders its
    // model; only consulted if the two ever disagree about what fits (see `trim`).
    this.panels = new Map();
  }

  get size() {
    return this.panels.size;
  }

  has(key) {
    return this.panels.has(key);
  }

  /**
   * Whether the page gave this panel's own buffer away (moved it to the compute thread that
   * needed it last): still cached, as far as the server and the threads are concerned, but
   * the page can no longer send it to a thread that lacks it.
   */
  detached(key) {
    const held = this.panels.get(key);
    return held !== undefined && held.byteLength === 0 && this.sizes.get(key) > 0;
  }

  /** How many panels are `detached`. */
  detachedCount() {
    let n = 0;
    for (const key of this.panels.keys()) if (this.detached(key)) n += 1;
    return n;
  }

  /**
   * Returns `task` with both `a` and `b` as ArrayBuffers, or null when a panel it omits is not
   * here: the caller then answers `panel_missing` and the server sends the task again in
   * full. Order matters and follows the server: this task's panels are looked up first, then
   * the ones that came are stored, then `evict` applies, so a key evicted by this very task
   * still serves it. Buffers are shared with the cache: whoever detaches one (moves it to a
   * compute thread) must no longer need the cache to hold its bytes (see `detached`).
   */
  resolve(task) {
    const a = this.take(task.a, task.a_key);
    const b = this.take(task.b, task.b_key);
    if (!a || !b) return null;
    if (task.a instanceof ArrayBuffer) this.store(task.a_key, a);
    if (task.b instanceof ArrayBuffer) this.store(task.b_key, b);
    for (const key of task.evict ?? []) this.drop(key);
    this.trim();
    return { ...task, a, b };
  }

  /** Forgets everything: the server starts a new model per connection and after `panel_missing`. */
  clear() {
    this.panels.clear();
    this.sizes.clear();
    this.used = 0;
    this.onDrop(null);
  }

  /** The keys held, least recently used first: what a page coming back says it still holds. */
  keys() {
    return [...this.panels.keys()];
  }

  /**
   * After a reconnection, keeps only the panels the server counts this page as holding
   * (`registration_ack`'s `panels_kept`, of those the page said it holds), in the server's
   * order, least recently used first; the rest are dropped, here and in the threads.
   */
  keepOnly(kept) {
    const keep = new Set(kept);
    const gone = this.keys().filter((key) => !keep.has(key));
    for (const key of gone) {
      this.panels.delete(key);
      this.used -= this.sizes.get(key) ?? 0;
      this.sizes.delete(key);
    }
    if (gone.length) this.onDrop(gone);
    for (const key of kept) {
      const held = this.panels.get(key);
      if (held === undefined) continue;
      this.panels.delete(key);
      this.panels.set(key, held);
    }
  }

  /** The panel that came with the task, else the cached one; a hit becomes most recently used. */
  take(sent, key) {
    if (sent instanceof ArrayBuffer) return sent;
    const held = key === undefined ? undefined : this.panels.get(key);
    if (!held) return null;
    this.panels.delete(key);
    this.panels.set(key, held);
    return held;
  }

  store(key, buffer) {
    // A server without panel reuse sends no keys; a panel above the whole budget the server
    // does not count as cached, so keeping it would hold memory nobody ever evicts.
    if (key === undefined || buffer.byteLength > this.budget) return;
    this.drop(key);
    this.panels.set(key, buffer);
    this.sizes.set(key, buffer.byteLength);
    this.used += buffer.byteLength;
  }

  drop(key) {
    if (!this.panels.has(key)) return;
    this.panels.delete(key);
    this.used -= this.sizes.get(key) ?? 0;
    this.sizes.delete(key);
    this.onDrop([key]);
  }

  /**
   * Keeps the announced budget even if this cache and the server's model drift apart (a task
   * stored here after `panel_missing` cleared the cache, before the server reset its model):
   * in step with the server this never drops anything, and a panel dropped here that the
   * server still counts on costs one `panel_missing`, never a wrong product.
   */
  trim() {
    for (const key of this.panels.keys()) {
      if (this.used <= this.budget) break;
      this.drop(key);
    }
  }
}
