// Building the page: every text goes in as a text node (never as HTML), so whatever the API
// returns is shown, not run.

/** h("a.link", {href: "#/x"}, "text", child, ...): an element; classes after dots. */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** Set a text only when it changed (cheap updates of thousands of tiles). */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export function table(headers, rows, { caption, empty = "nothing here" } = {}) {
  if (!rows.length) return h("p.empty", null, empty);
  return h(
    "table",
    null,
    caption ? h("caption", null, caption) : null,
    h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", null, rows.map((cells) => h("tr", null, cells.map((c) => h("td", null, c))))),
  );
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function button(text, onclick, cls = "") {
  return h("button" + (cls ? "." + cls : ""), { type: "button", onclick }, text);
}

export function badge(text, kind = "") {
  return h("span.badge" + (kind ? "." + kind : ""), null, text);
}

/** A status word with a class per value, so colour always comes with its text. */
export function status(value) {
  return h("span.st.st-" + String(value).replace(/[^a-z_]/g, ""), null, String(value));
}

// ------------------------------------------------------------------------------ formats

export function num(x, digits = 0) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

export function gb(mb, digits = 0) {
  return mb === null || mb === undefined ? "–" : (mb / 1024).toFixed(digits);
}

export function money(value, currency = "") {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  return `${n.toFixed(2)}${currency ? " " + currency : ""}`;
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  return duration((now - new Date(iso).getTime()) / 1000) + " ago";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function short(id) {
  return String(id).slice(0, 8);
}

/** Text with every uuid in it shortened to its first 8 digits (as the CLI accepts them). */
export function shortIds(text) {
  return String(text).replace(/\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/g, "$1");
}

/** Who did something ("user:<uuid>", "host:name", null for the system). */
export function actor(value) {
  return value ? shortIds(value) : "system";
}

export function gpusOf(req) {
  if (!req) return "–";
  if (req.gpu_count === 0) return "CPU only";
  const share = req.gpu_milli && req.gpu_milli < 1000 ? `${req.gpu_milli / 1000} × ` : "";
  const models = req.gpu_models && req.gpu_models.length ? " " + req.gpu_models.join("|") : "";
  return `${share}${req.gpu_count} GPU${req.gpu_count > 1 ? "s" : ""}${models}`;
}
