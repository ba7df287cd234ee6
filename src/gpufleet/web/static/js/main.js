// The dashboard's entry: sign-in, the header, and a hash router that mounts one page at a time.
// A page module exports mount(root, params, ctx) and returns {dispose} (or nothing).

import { ApiError, can, currentMe, loadConfig, loadMe, onUnauthorized, session, uiConfig } from "./api.js";
import { button, h, replace } from "./dom.js";
import { Live } from "./live.js";
import * as events from "./pages/events.js";
import * as fleet from "./pages/fleet.js";
import * as host from "./pages/host.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as predictions from "./pages/predictions.js";
import * as queue from "./pages/queue.js";
import * as usage from "./pages/usage.js";

const ROUTES = [
  [/^\/fleet$/, fleet.mount, "fleet"],
  [/^\/hosts\/([0-9a-f-]{36})$/, host.mountHost, "fleet"],
  [/^\/gpus\/([0-9a-f-]{36})$/, host.mountGpu, "fleet"],
  [/^\/queue$/, queue.mount, "queue"],
  [/^\/jobs$/, jobs.mount, "jobs"],
  [/^\/jobs\/([0-9a-f-]{36})$/, job.mount, "jobs"],
  [/^\/predictions$/, predictions.mount, "predictions"],
  [/^\/usage$/, usage.mount, "usage"],
  [/^\/events$/, events.mount, "events"],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const statusLine = document.getElementById("status");
let current = null;
let statusTimer = null;
let signedIn = false;

function setStatus(message, kind = "info") {
  statusLine.textContent = message || "";
  statusLine.className = "status" + (message ? " " + kind : "");
  if (statusTimer) clearTimeout(statusTimer);
  if (message && kind !== "error") statusTimer = setTimeout(() => setStatus(""), 6000);
}

const live = new Live((message) => (message ? setStatus(message, "error") : setStatus("")));
const ctx = {
  live,
  status: setStatus,
  /** Run an action of a button: report its error in the status line instead of throwing. */
  async act(what, fn) {
    try {
      const out = await fn();
      setStatus(`${what}: done`);
      return out;
    } catch (err) {
      setStatus(`${what}: ${err instanceof ApiError ? err.message : err}`, "error");
      return null;
    }
  },
};

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/fleet";
  const [path, query] = raw.split("?");
  return { path, query: new URLSearchParams(query || "") };
}

let routed = 0; // which navigation is the latest: a page that mounts after a newer one is dropped

function leavePage() {
  if (current && current.dispose) current.dispose();
  current = null;
}

async function route() {
  leavePage();
  const mine = ++routed;
  if (!session.credential) return showSignIn();
  const { path, query } = parseHash();
  for (const [pattern, mount, name] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    for (const a of nav.querySelectorAll("a")) {
      if (a.dataset.page === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const root = h("div.page");
    replace(main, root);
    try {
      const page = (await mount(root, { id: m[1], query }, ctx)) || null;
      if (mine !== routed) {
        if (page && page.dispose) page.dispose();
        return;
      }
      current = page;
      // A new page takes the focus to its heading, so screen readers announce where you are.
      const heading = root.querySelector("h1");
      if (heading && document.activeElement && !root.contains(document.activeElement)) {
        heading.tabIndex = -1;
        heading.focus({ preventScroll: true });
      }
    } catch (err) {
      replace(root, h("p.error", null, `This page could not load: ${err.message || err}`));
    }
    document.title = `gpufleet · ${name}`;
    return;
  }
  replace(main, h("div.page", null, h("h1", null, "Not found"), h("p", null, "No page at ", path, ".")));
}

function showSignIn(message = "") {
  signedIn = false;
  routed += 1;
  leavePage();
  live.stop();
  nav.hidden = true;
  replace(who);
  const input = h("input", {
    id: "credential",
    type: "password",
    autocomplete: "off",
    required: true,
    placeholder: "gfk_...",
    "aria-describedby": "signin-help",
  });
  const error = h("p.error", { role: "alert" }, message);
  const form = h(
    "form.signin",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        session.signIn(input.value);
        await start(error);
      },
    },
    h("h1", null, "Sign in to gpufleet"),
    h("label", { for: "credential" }, uiConfig().supabase ? "API key or Supabase access token" : "API key"),
    input,
    h(
      "p.help",
      { id: "signin-help" },
      "Kept in this browser tab only (sessionStorage): closing the tab signs you out. ",
      "Make a key with ",
      h("code", null, "gpufleet keys create"),
      " or use the one ",
      h("code", null, "gpufleet up"),
      " saved.",
      uiConfig().supabase ? " A Supabase sign-in that redirects here with an access token signs you in too." : "",
    ),
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  replace(main, h("div.page", null, form));
  input.focus();
}

async function chooseOrganization(me) {
  const options = me.memberships.map((m) => h("option", { value: m.organization_id }, `${m.organization_name} (${m.role})`));
  const select = h("select", { id: "org" }, options);
  return new Promise((resolve) => {
    replace(
      main,
      h(
        "div.page",
        null,
        h(
          "form.signin",
          {
            onsubmit: (e) => {
              e.preventDefault();
              session.setOrganization(select.value);
              resolve();
            },
          },
          h("h1", null, `Hello ${me.user.email}`),
          h("label", { for: "org" }, "Organization"),
          select,
          h("button", { type: "submit" }, "Continue"),
        ),
      ),
    );
    select.focus();
  });
}

async function start(errorEl) {
  try {
    let me = await loadMe();
    if (!me.organization_id && me.memberships.length) {
      await chooseOrganization(me);
      me = await loadMe();
    }
    if (!me.organization_id) throw new Error("this credential belongs to no organization yet");
  } catch (err) {
    session.signOut();
    const why = err instanceof ApiError && err.status === 401 ? "The server did not accept this credential." : String(err.message || err);
    if (errorEl) errorEl.textContent = why;
    else showSignIn(why);
    return;
  }
  signedIn = true;
  renderWho();
  nav.hidden = false;
  live.start();
  if (!location.hash || location.hash === "#/signin") location.hash = "#/fleet";
  else await route();
}

function renderWho() {
  const me = currentMe();
  const membership = me.memberships.find((m) => m.organization_id === me.organization_id);
  replace(
    who,
    h("span", null, me.user.email),
    " · ",
    h("span", null, membership ? membership.organization_name || membership.organization_slug || "" : ""),
    " · ",
    h("span.role", { title: "your role: what you may do follows it" }, me.role),
    button("Sign out", () => {
      session.signOut();
      location.hash = "#/signin";
      showSignIn();
    }),
  );
  // Pages whose every operation this role lacks stay out of the navigation.
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.page === "usage") a.hidden = !can("usage.read");
  }
}

async function boot() {
  await loadConfig();
  onUnauthorized(() => {
    if (!signedIn) return; // a refused sign-in says so itself
    session.signOut();
    showSignIn("Your credential is no longer accepted: sign in again.");
  });
  // A Supabase sign-in redirects back with #access_token=...: take it, and drop it from the URL.
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (fragment.get("access_token")) {
    session.signIn(fragment.get("access_token"));
    history.replaceState(null, "", location.pathname + "#/fleet");
  }
  window.addEventListener("hashchange", () => {
    if (signedIn) route();
  });
  if (session.credential) await start(null);
  else showSignIn();
}

boot();
