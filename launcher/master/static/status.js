// Beolaunch status page: redraws the node grid and the running jobs from each
// server-sent snapshot (GET /events). No library, nothing from the internet.
"use strict";

(function () {
  const grid = document.getElementById("grid");
  const jobs = document.getElementById("jobs");
  if (!grid || !jobs || !window.EventSource) return;
  const viewer = document.body.dataset.uid === "" ? null : Number(document.body.dataset.uid);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c);
    return node;
  }

  function size(n) {
    if (typeof n !== "number") return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? `${n.toFixed(0)} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function tile(n) {
    const mem = typeof n.mem_total === "number" && typeof n.mem_available === "number"
      ? `${size(n.mem_total - n.mem_available)} / ${size(n.mem_total)}` : "-";
    const cache = n.cache_budget ? `${size(n.cache_used)} / ${size(n.cache_budget)}` : "-";
    return el("a", { class: `tile ${n.state}`, href: `/nodes/${n.name}`, "data-node": n.name,
                     title: n.reason || n.state },
      el("b", {}, n.name), el("span", { class: "state" }, n.state),
      el("span", {}, `load ${n.load === null ? "-" : n.load}`),
      el("span", {}, `mem ${mem}`), el("span", {}, `cache ${cache}`));
  }

  function state(j) {
    if (j.state !== "ended") return j.state;
    return j.exit === null || j.exit === undefined ? "ended" : `ended, exit ${j.exit}`;
  }

  function job(j) {
    const mine = viewer !== null && (viewer === 0 || viewer === j.uid);
    const title = `job ${j.job}`;
    const head = el("h3", {}, mine ? el("a", { href: `/jobs/${j.job}` }, title) : title, " ",
      el("small", {}, `${j.user}, ${state(j)}, ${j.tasks} tasks`));
    const list = el("ul");
    for (const n of j.nodes) {
      const pct = n.filled ? 100 : (n.files_total ? Math.floor(100 * n.files_done / n.files_total) : 0);
      list.append(el("li", { "data-node": n.name, class: n.filled ? "filled" : "filling" },
        el("span", { class: "name" }, n.name), el("progress", { max: "100", value: String(pct) }),
        el("span", { class: "pct" }, `${pct}%`),
        el("span", {}, `${n.files_done}/${n.files_total} files, ${size(n.bytes_done)}`)));
    }
    return el("section", { class: `job ${j.state}`, "data-job": String(j.job) }, head, list);
  }

  function draw(snap) {
    grid.replaceChildren(...(snap.nodes.length ? snap.nodes.map(tile)
      : [el("p", { class: "empty" }, "no nodes")]));
    jobs.replaceChildren(...(snap.jobs.length ? snap.jobs.map(job)
      : [el("p", { class: "empty" }, "no job running")]));
    const at = document.getElementById("at");
    if (at) at.textContent = snap.at;
    document.body.dataset.live = "yes";
  }

  const source = new EventSource("/events");
  source.onmessage = (event) => draw(JSON.parse(event.data));
  source.onerror = () => { document.body.dataset.live = "no"; };
})();
