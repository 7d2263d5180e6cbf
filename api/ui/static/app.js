// The WrenchAI dashboard: signs in, then uses only the public API and its live streams.
// The credential (an API key, or a user's access token) stays in this tab's sessionStorage.
import { ApiError, CREDENTIAL, announce, api, credential, go, h, leaveView, show } from "./core.js";
import { taskView } from "./views/task.js";
import { tasksView } from "./views/tasks.js";

// -- navigation ----------------------------------------------------------------------------
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href^='/ui']");
  if (link && !event.metaKey && !event.ctrlKey) {
    event.preventDefault();
    go(link.getAttribute("href"));
  }
});
window.addEventListener("popstate", () => route());
window.addEventListener("wrench:navigate", () => route());
window.addEventListener("wrench:expired", () => signOut("Your sign-in has ended: sign in again."));

async function route() {
  leaveView();
  const cred = credential();
  document.getElementById("nav").hidden = !cred;
  document.getElementById("who").hidden = !cred;
  if (!cred) return signIn();
  document.getElementById("principal").textContent = cred.label || "";
  for (const link of document.querySelectorAll("#nav a")) {
    const current = location.pathname.startsWith(link.getAttribute("href"));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const task = location.pathname.match(/^\/ui\/tasks\/([0-9a-f-]{36})$/);
  if (task) return taskView(task[1]);
  const section = location.pathname.match(/^\/ui\/([a-z]+)\/?$/)?.[1];
  if (SECTIONS[section]) return (await SECTIONS[section]()).default();
  return tasksView();
}

// The other sections, each its own module, loaded when first shown.
const SECTIONS = {
  alerts: () => import("./views/alerts.js"),
  quality: () => import("./views/quality.js"),
  cost: () => import("./views/cost.js"),
  agents: () => import("./views/agents.js"),
};

function signOut(message) {
  sessionStorage.removeItem(CREDENTIAL);
  history.replaceState({}, "", "/ui");
  route();
  if (message) announce(message);
}
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));

// -- sign in -------------------------------------------------------------------------------
function signIn() {
  const error = h("p", { class: "error", role: "alert" });
  let mode = "key";
  const keyFields = h("div", { class: "stack" },
    h("label", {}, "API key", h("input", { name: "key", type: "password", autocomplete: "off", required: true })));
  const userFields = h("div", { class: "stack", hidden: true },
    h("label", {}, "User name", h("input", { name: "username", autocomplete: "username" })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password" })));
  const tab = (name, label) => h("button", {
    type: "button", role: "tab", "aria-selected": String(name === mode), id: `tab-${name}`,
    onclick: () => {
      mode = name;
      keyFields.hidden = name !== "key";
      userFields.hidden = name !== "user";
      // Only the shown fields are required: a hidden required field blocks the form.
      keyFields.querySelector("input").required = name === "key";
      for (const input of userFields.querySelectorAll("input")) input.required = name === "user";
      for (const b of tabs.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.id === `tab-${name}`));
    },
  }, label);
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "How to sign in" },
    tab("key", "API key"), tab("user", "User and password"));
  const form = h("form", { class: "stack", "aria-label": "Sign in" }, tabs, keyFields, userFields,
    h("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const data = new FormData(form);
    try {
      let cred;
      if (mode === "key") {
        cred = { kind: "key", token: String(data.get("key") || "").trim() };
      } else {
        const response = await fetch("/auth/token", {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({
            grant_type: "password", username: String(data.get("username") || ""),
            password: String(data.get("password") || ""),
          }),
        });
        const body = await response.json();
        if (!response.ok) throw new ApiError(response.status, body);
        cred = { kind: "bearer", token: body.access_token };
      }
      const me = await api("/auth/me", { cred });
      cred.label = `${me.tenant_id} · ${me.role || me.credential}`;
      cred.scopes = me.scopes;
      sessionStorage.setItem(CREDENTIAL, JSON.stringify(cred));
      if (location.pathname === "/ui" || location.pathname === "/ui/") history.replaceState({}, "", "/ui/tasks");
      route();
      announce("Signed in.");
    } catch (exc) {
      error.textContent = exc.status === 401 ? "That credential was not accepted." : exc.message;
    }
  });
  show(h("h1", {}, "Sign in"), h("section", { class: "card" }, form));
}

route();
