// Keeping the page live without reloads: the organization's change feed, long-polled (one
// request open at a time, answered as soon as something happens), plus a slow timer for what
// changes without events (GPU samples). Errors back off 1 s doubling to 30 s; a hidden tab
// stops the timer, and its first look back refreshes at once.

import { api } from "./api.js";

const MAX_BACKOFF_MS = 30_000;

export class Live {
  constructor(onStatus) {
    this.onStatus = onStatus;
    this.subscribers = new Set();
    this.running = false;
    this.lastSeq = -1;
    this.failures = 0;
    this.controller = null;
  }

  /** fn(events) is called with each batch of new events; returns an unsubscribe function. */
  subscribe(fn) {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop();
  }

  stop() {
    this.running = false;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    while (this.running) {
      this.controller = new AbortController();
      try {
        const page = await api("/v1/events", {
          params: { after_seq: this.lastSeq, wait_s: this.lastSeq < 0 ? 0 : 25, limit: 200 },
          signal: this.controller.signal,
        });
        const first = this.lastSeq < 0;
        this.lastSeq = page.last_seq;
        if (this.failures) this.onStatus("");
        this.failures = 0;
        if (!first && page.events.length) this.subscribers.forEach((fn) => fn(page.events));
      } catch (err) {
        if (!this.running) return;
        if (err && err.status === 401) return;
        this.failures += 1;
        const delay = backoff(this.failures);
        this.onStatus(`live updates interrupted (${err.message || err}); retrying in ${Math.round(delay / 1000)} s`);
        await sleep(delay);
      }
    }
  }
}

export function backoff(failures) {
  return Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.max(0, failures - 1));
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Call ``refresh`` ``delayMs`` after live events of which one ``matches`` (a burst: once, after
 *  the last); returns the function that stops listening and drops a refresh still waiting. */
export function refreshOnLive(live, matches, refresh, delayMs) {
  let timer = null;
  const unsubscribe = live.subscribe((evs) => {
    if (!evs.some(matches)) return;
    clearTimeout(timer);
    timer = setTimeout(() => refresh().catch(() => {}), delayMs);
  });
  return () => {
    unsubscribe();
    clearTimeout(timer);
  };
}

/** Call ``fn`` every ``ms`` while the tab is visible, with backoff after failures. */
export function every(ms, fn) {
  let timer = null;
  let failures = 0;
  let stopped = false;
  let busy = false;
  const tick = async () => {
    timer = null;
    if (stopped || busy) return;
    if (document.hidden) return; // resumed by the visibility listener
    busy = true;
    try {
      await fn();
      failures = 0;
    } catch {
      failures += 1;
    } finally {
      busy = false;
    }
    if (!stopped && timer === null) timer = setTimeout(tick, failures ? Math.max(ms, backoff(failures)) : ms);
  };
  const visible = () => {
    if (!document.hidden && timer === null && !stopped && !busy) tick();
  };
  document.addEventListener("visibilitychange", visible);
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    document.removeEventListener("visibilitychange", visible);
  };
}
