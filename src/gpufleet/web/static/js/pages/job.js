// One job: its facts, cancel (for roles that may), its history, its attempts, and its output
// followed live over Server-Sent Events (reconnecting where it left off).

import { api, ApiError, can, sse } from "../api.js";
import { actor, shortIds, ago, button, duration, gpusOf, h, link, money, replace, short, status, table, when } from "../dom.js";
import { backoff, refreshOnLive, sleep } from "../live.js";

const FINISHED = ["succeeded", "failed", "cancelled", "timed_out", "allocation_failed"];
const MAX_LOG_NODES = 5000;

export async function mount(root, { id }, ctx) {
  const head = h("div");
  const eventsSlot = h("div");
  const attemptSel = h("select", { id: "log-attempt", "aria-label": "Which attempt's output" }, h("option", { value: "" }, "every attempt, live"));
  const logState = h("span.muted", { id: "log-state", role: "status" });
  const log = h("pre.log", { id: "log", tabindex: "0", "aria-label": "Job output" });
  replace(
    root,
    head,
    h("h2", null, "Output"),
    h("div.toolbar", null, attemptSel, logState),
    log,
    h("h2", null, "History"),
    eventsSlot,
  );
  let job = null;
  let follower = null;

  async function refresh() {
    job = await api(`/v1/jobs/${id}`);
    const actions = [];
    if (can("jobs.cancel") && !FINISHED.includes(job.status) && !job.cancel_requested_at) {
      actions.push(
        button("Cancel job", () => ctx.act(`cancel ${job.name}`, () => api(`/v1/jobs/${id}/cancel`, { method: "POST" })).then(refresh), "danger"),
      );
    }
    const what = job.command ? job.command.join(" ") : job.script;
    replace(
      head,
      h("p.crumbs", null, link("#/jobs", "Jobs"), " / ", short(job.id)),
      h("h1", null, job.name, " ", status(job.status)),
      job.cancel_requested_at && !FINISHED.includes(job.status) ? h("p.warn", null, "Cancel requested ", ago(job.cancel_requested_at), "; the agent is stopping it.") : null,
      job.pending_reason ? h("p.warn", null, "Waiting: ", job.pending_reason) : null,
      job.status_reason ? h("p", null, job.status_reason) : null,
      h("div.actions", null, actions),
      h(
        "dl.facts",
        null,
        [
          ["id", job.id],
          [job.command ? "command" : "script", h("code", null, what)],
          ["asks for", gpusOf(job.requirements)],
          ["priority", String(job.priority)],
          ["attempt", `${job.attempt} of at most ${job.retry.max_attempts}`],
          ["host", job.host_id ? link(`#/hosts/${job.host_id}`, short(job.host_id)) : "–"],
          ["GPUs held", job.gpus.length ? job.gpus.map((g) => short(g.gpu_id)).join(", ") : "–"],
          ["exit code", job.exit_code === null ? "–" : String(job.exit_code)],
          ["submitted", when(job.created_at)],
          ["ran", job.started_at ? duration(((job.finished_at ? new Date(job.finished_at) : new Date()) - new Date(job.started_at)) / 1000) : "–"],
          ["cost", money(job.cost)],
          ["labels", Object.entries(job.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "–"],
        ].map(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
      ),
    );
    const have = attemptSel.options.length - 1;
    for (let a = have + 1; a <= job.attempt; a++) attemptSel.appendChild(h("option", { value: a }, `attempt ${a}`));
    const evs = await api(`/v1/jobs/${id}/events`, { params: { limit: 200 } });
    replace(
      eventsSlot,
      table(
        ["#", "when", "event", "details", "by"],
        evs.items.map((e) => [String(e.seq), when(e.created_at), e.type, details(e.data), actor(e.actor)]),
        { caption: "Events, oldest first", empty: "no events" },
      ),
    );
  }

  function details(data) {
    const parts = [];
    if (data.from && data.to) parts.push(`${data.from} → ${data.to}`);
    if (data.attempt) parts.push(`attempt ${data.attempt}`);
    if (data.reason) parts.push(String(data.reason));
    return shortIds(parts.join("; "));
  }

  function follow() {
    if (follower) follower.abort();
    const controller = new AbortController();
    follower = controller;
    const attempt = attemptSel.value || undefined;
    replace(log);
    let lastId = null;
    let failures = 0;
    (async () => {
      while (!controller.signal.aborted) {
        logState.textContent = "following…";
        try {
          let ended = null;
          await sse(`/v1/jobs/${id}/logs/stream`, {
            params: { attempt },
            lastEventId: lastId,
            signal: controller.signal,
            onEvent: (ev) => {
              failures = 0;
              if (ev.event === "log") {
                lastId = ev.id;
                appendChunk(JSON.parse(ev.data), !attempt);
              } else if (ev.event === "end") {
                ended = JSON.parse(ev.data);
              }
            },
          });
          if (ended) {
            logState.textContent = `end of output: the job ${ended.job_status}`;
            refresh().catch(() => {});
            return;
          }
        } catch (err) {
          if (controller.signal.aborted) return;
          if (err instanceof ApiError && err.status < 500 && err.status !== 429) {
            logState.textContent = `output unavailable: ${err.message}`;
            return;
          }
          failures += 1;
        }
        const delay = backoff(Math.max(1, failures));
        logState.textContent = `connection lost; reconnecting in ${Math.round(delay / 1000)} s`;
        await sleep(delay);
      }
    })();
  }

  let lastAttempt = null;
  function appendChunk(chunk, showAttempt) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    if (showAttempt && chunk.attempt !== lastAttempt) {
      log.appendChild(h("span.system", null, `── attempt ${chunk.attempt} ──\n`));
      lastAttempt = chunk.attempt;
    }
    log.appendChild(h("span." + chunk.stream, null, chunk.text));
    while (log.childNodes.length > MAX_LOG_NODES) log.removeChild(log.firstChild);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  await refresh();
  follow();
  attemptSel.addEventListener("change", () => {
    lastAttempt = null;
    follow();
  });
  const stopLive = refreshOnLive(ctx.live, (e) => e.entity_id === id, refresh, 100);
  return {
    dispose() {
      stopLive();
      if (follower) follower.abort();
    },
  };
}
