// Queue: the pending jobs in the order the scheduler considers them, why each waits, and the
// quotas in use.

import { api } from "../api.js";
import { ago, gpusOf, h, link, num, replace, table } from "../dom.js";
import { every, refreshOnLive } from "../live.js";

export async function mount(root, _params, ctx) {
  const jobsSlot = h("div");
  const quotasSlot = h("div");
  replace(root, h("h1", null, "Queue"), jobsSlot, h("h2", null, "Quotas"), quotasSlot);

  async function refresh() {
    const [queue, quotas] = await Promise.all([api("/v1/queue", { params: { limit: 200 } }), api("/v1/quotas")]);
    replace(
      jobsSlot,
      h("p", null, queue.pending === 0 ? "Nothing is waiting." : `${queue.pending} job${queue.pending === 1 ? "" : "s"} waiting${queue.pending > queue.items.length ? `; the first ${queue.items.length} are shown` : ""}, in scheduling order (priority, then time queued).`),
      table(
        ["#", "job", "priority", "asks for", "submitted", "why it waits"],
        queue.items.map((j, i) => [String(i + 1), link(`#/jobs/${j.id}`, j.name), String(j.priority), gpusOf(j.requirements), ago(j.created_at), j.pending_reason || "being placed"]),
        { caption: "Pending jobs", empty: "" },
      ),
    );
    replace(
      quotasSlot,
      table(
        ["GPU model", "in use", "limit", "used"],
        quotas.map((q) => {
          const pct = q.max_gpus ? (100 * q.used_gpus) / q.max_gpus : 100;
          return [q.gpu_model || "all GPUs", num(q.used_gpus, 1), String(q.max_gpus), h("span", null, meter(pct), ` ${pct.toFixed(0)}%`)];
        }),
        { empty: "No quotas: the organization may use every GPU it has." },
      ),
    );
  }

  function meter(pct) {
    return h("meter", { min: 0, max: 100, value: Math.min(100, pct), high: 90, "aria-label": `${pct.toFixed(0)}% of the quota` });
  }

  await refresh();
  const stopLive = refreshOnLive(ctx.live, (e) => e.entity_type === "job" || e.type.startsWith("quota"), refresh, 250);
  const stop = every(10_000, refresh);
  return {
    dispose() {
      stop();
      stopLive();
    },
  };
}
