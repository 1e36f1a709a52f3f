// reminderd dashboard: the little the pages need a script for. Loaded from 'self' only (the
// Content-Security-Policy allows no inline script); every page works without it, less live.
"use strict";

(function () {
  const page = document.body.dataset.page;
  const base = document.body.dataset.base || "";

  // Forms that ask first (cancel a message).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  // Dead letters: a checkbox that selects every row.
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('#dead input[name="id"]').forEach(function (box) { box.checked = all.checked; });
    });
  }

  // Overview: the live region again every 5 s, in place (scroll position and focus stay); once
  // the session has ended (sent to the sign-in page, or refused), it says so and stops asking.
  if (page === "overview") {
    const live = document.getElementById("live");
    const said = document.getElementById("live-state");
    let timer = null;
    let ended = false;
    const refresh = async function () {
      if (document.hidden || ended) return;
      try {
        const answer = await fetch(live.dataset.refresh, { credentials: "same-origin", cache: "no-store" });
        if (answer.redirected || answer.status === 401) {
          ended = true;
          window.clearInterval(timer);
          said.textContent = "signed out: reload to sign in";
          said.hidden = false;
          return;
        }
        if (!answer.ok) return;
        const parsed = new DOMParser().parseFromString(await answer.text(), "text/html");
        live.replaceChildren(...parsed.body.childNodes);
        live.dataset.refreshed = String(Date.now());
      } catch (error) {
        /* the server is away for a moment: the next round tries again */
      }
    };
    timer = window.setInterval(refresh, 5000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  }

  // Live feed: fires pushed over Server-Sent Events, newest first; pausing keeps the screen.
  if (page === "feed") {
    const table = document.getElementById("feed");
    const rows = document.getElementById("feed-rows");
    const empty = document.getElementById("feed-empty");
    const state = document.getElementById("feed-state");
    const pause = document.getElementById("feed-pause");
    const size = Number(table.dataset.size) || 1000;
    const kinds = JSON.parse(table.dataset.kinds);
    let paused = false;
    let held = [];
    let live = false;

    const cell = function (text, className) {
      const td = document.createElement("td");
      if (className) td.className = className;
      td.textContent = text;
      return td;
    };
    const utc = function (iso) {
      const d = new Date(iso);
      return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
    };
    const row = function (fire) {
      const tr = document.createElement("tr");
      const kind = kinds[fire.event] || [fire.event, fire.event];
      tr.dataset.id = String(fire.id);
      tr.dataset.kind = kind[0];
      tr.dataset.shownAt = String(Date.now());  // when it appeared (the browser tests read it)
      tr.className = "new";
      tr.appendChild(cell(utc(fire.at), "when"));
      tr.appendChild(cell(fire.tenant_id));
      const ref = document.createElement("td");
      const link = document.createElement("a");
      link.className = "ref";
      link.href = base + "/messages/" + encodeURIComponent(String(fire.message_id));
      link.textContent = fire.ref_id;
      ref.appendChild(link);
      tr.appendChild(ref);
      const outcome = document.createElement("td");
      const badge = document.createElement("span");
      badge.className = "badge ev-" + kind[0];
      badge.textContent = kind[1];
      outcome.appendChild(badge);
      tr.appendChild(outcome);
      tr.appendChild(cell(fire.reason || "", "reason"));
      return tr;
    };
    const show = function (fires) {
      for (const fire of fires) {
        if (rows.querySelector('tr[data-id="' + fire.id + '"]')) continue;
        rows.insertBefore(row(fire), rows.firstChild);
      }
      while (rows.children.length > size) rows.removeChild(rows.lastChild);
      if (empty) empty.hidden = rows.children.length > 0;
    };
    const say = function () {
      if (state.dataset.state === "signed-out") return;
      if (paused) state.textContent = "paused" + (held.length ? " · " + held.length + " new" : "");
      else state.textContent = live ? "live" : "reconnecting…";
      state.dataset.state = paused ? "paused" : live ? "live" : "reconnecting";
    };
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      pause.setAttribute("aria-pressed", String(paused));
      if (!paused) {
        show(held);
        held = [];
      }
      say();
    });
    const source = new EventSource(table.dataset.stream);
    source.addEventListener("open", function () { live = true; say(); });
    source.addEventListener("error", function () { live = false; say(); });
    source.addEventListener("signed-out", function () {  // the session ended: no reconnecting
      source.close();
      state.textContent = "signed out: reload to sign in again";
      state.dataset.state = "signed-out";
    });
    source.addEventListener("fire", function (event) {
      const fire = JSON.parse(event.data);
      if (paused) {
        held.push(fire);
        if (held.length > size) held.shift();
      } else {
        show([fire]);
      }
      say();
    });
  }
})();
