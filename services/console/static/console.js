// cartstream console: forms sent with the CSRF header, the store page's live feed.
"use strict";

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

function showError(form, text) {
  const el = form.querySelector("[data-error]");
  if (el) el.textContent = text;
}

async function problem(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail);
  } catch (e) {
    return response.status + " " + response.statusText;
  }
}

// <form data-csrf>: an ordinary form post (login, logout), with the CSRF header added
document.addEventListener("submit", async (ev) => {
  const form = ev.target;
  if (!form.matches("form[data-csrf]")) return;
  ev.preventDefault();
  const response = await fetch(form.action, {
    method: "POST",
    headers: {"X-CSRFToken": csrfToken()},
    body: new URLSearchParams(new FormData(form)),
    credentials: "same-origin",
  });
  if (response.ok && response.redirected) { window.location = response.url; return; }
  if (response.ok) { window.location.reload(); return; }
  if (response.status === 401) showError(form, "Wrong username or password.");
  else if (response.status === 429) showError(form, "Too many failed logins: try again in a few minutes.");
  else showError(form, await problem(response));
});

// <form data-json="/api/...">: the fields as a JSON body; the pressed button gives its name
document.addEventListener("submit", async (ev) => {
  const form = ev.target;
  if (!form.matches("form[data-json]")) return;
  ev.preventDefault();
  const body = {};
  const quantities = {};
  for (const [name, value] of new FormData(form).entries()) {
    if (name.startsWith("qty:")) quantities[name.slice(4)] = parseInt(value, 10);
    else if (name !== "add_sku" && name !== "add_qty") body[name] = value;
  }
  const add = form.elements["add_sku"];
  if (add && add.value) quantities[add.value] = (quantities[add.value] || 0) + parseInt(form.elements["add_qty"].value, 10);
  if (ev.submitter && ev.submitter.name) body[ev.submitter.name] = ev.submitter.value;
  if (form.id === "decision" && body.action === "CORRECT") body.quantities = quantities;
  if (form.matches("[data-frame]") && body.verdict === "CONFIRMED") delete body.sku;
  if (form.matches("[data-frame]") && body.verdict === "EMPTY") delete body.sku;
  const response = await fetch(form.dataset.json, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken()},
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.ok && form.id === "decision") {
    // persist records the decision from checkout.decisions: show the page once it has
    const sent = await response.json();
    showError(form, "Decision sent; waiting for it to be recorded…");
    for (let i = 0; i < 100; i++) {
      const now = await fetch("/api/checkouts/" + sent.checkout_id, {credentials: "same-origin"});
      if (now.ok && (await now.json()).decisions.some((d) => d.decision_id === sent.decision_id)) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    window.location = form.dataset.next;
    return;
  }
  if (response.ok) { window.location = form.dataset.next; return; }
  showError(form, await problem(response));
});

function money(cents) { return (cents / 100).toFixed(2); }

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

async function openCart(cartId) {
  const panel = document.getElementById("basket");
  panel.dataset.cart = cartId;
  const response = await fetch("/api/carts/" + encodeURIComponent(cartId) + "/basket", {credentials: "same-origin"});
  panel.replaceChildren();
  const title = document.createElement("p");
  if (!response.ok) { title.textContent = cartId + ": " + await problem(response); panel.append(title); return; }
  const b = await response.json();
  title.textContent = b.cart_id + " · " + b.status + " · " + b.item_count + " items · " + money(b.subtotal_cents) + " " + b.currency;
  title.dataset.testid = "basket-title";
  const items = document.createElement("table");
  items.id = "basket-items";
  for (const i of b.items) {
    const tr = document.createElement("tr");
    tr.dataset.sku = i.sku;
    tr.append(cell(i.quantity + " ×"), cell(i.name), cell(money(i.line_total_cents)));
    items.append(tr);
  }
  const changes = document.createElement("ol");
  for (const c of b.changes) {
    const li = document.createElement("li");
    li.textContent = c.action + " " + c.quantity + " × " + c.sku + " (confidence " + c.confidence.toFixed(2) + ")";
    changes.append(li);
  }
  const alerts = document.createElement("ul");
  for (const a of b.alerts) {
    const li = document.createElement("li");
    li.className = "sev-WARNING";
    li.textContent = a.description;
    alerts.append(li);
  }
  panel.append(title, items, changes, alerts);
}

function storePage() {
  const view = document.querySelector("[data-store-view]");
  if (!view) return;
  document.addEventListener("click", (ev) => {
    const link = ev.target.closest("[data-open-cart]");
    if (!link) return;
    ev.preventDefault();
    openCart(link.dataset.openCart);
  });
  const rows = document.querySelector("#carts tbody");
  function row(e) {
    let tr = rows.querySelector('tr[data-cart="' + CSS.escape(e.cart_id) + '"]');
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.cart = e.cart_id;
      const link = document.createElement("a");
      link.href = "#"; link.dataset.openCart = e.cart_id; link.textContent = e.cart_id;
      const first = document.createElement("td"); first.append(link);
      const status = cell("shopping"); status.dataset.field = "status";
      const changes = cell("0"); changes.dataset.field = "changes";
      const alerts = cell("0"); alerts.dataset.field = "alerts";
      tr.append(first, cell(e.store_id), status, changes, alerts);
      rows.prepend(tr);
    }
    return tr;
  }
  function bump(tr, field) { const td = tr.querySelector('[data-field="' + field + '"]'); td.textContent = String(parseInt(td.textContent, 10) + 1); }
  const source = new EventSource("/events");
  source.addEventListener("change", (m) => {
    const e = JSON.parse(m.data);
    const tr = row(e);
    bump(tr, "changes");
    if (e.action === "CHECKOUT_REQUESTED") tr.querySelector('[data-field="status"]').textContent = "checking_out";
    const panel = document.getElementById("basket");
    if (panel.dataset.cart === e.cart_id) openCart(e.cart_id);
  });
  source.addEventListener("alert", (m) => {
    const e = JSON.parse(m.data);
    bump(row(e), "alerts");
    const li = document.createElement("li");
    li.className = "sev-" + e.severity;
    li.textContent = e.kind + " " + e.cart_id + ": " + e.description;
    document.getElementById("alerts").prepend(li);
  });
  source.addEventListener("checkout", (m) => {
    const e = JSON.parse(m.data);
    row(e).querySelector('[data-field="status"]').textContent = "checked_out (" + e.status + ")";
  });
}

document.addEventListener("DOMContentLoaded", storePage);
