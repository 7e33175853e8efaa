// The ripcord proxy dashboard: one tile per breaker, fed by the admin
// listener's server-sent events (/api/events). No dependencies, no build step.
"use strict";
(() => {
  const STATE_TEXT = {
    closed: "closed",
    open: "open",
    half_open: "half-open",
    forced_open: "forced open",
    disabled: "disabled",
    metrics_only: "metrics only",
  };
  const OPEN_STATES = new Set(["open", "half_open", "forced_open"]);
  const W = 300;
  const H = 64;
  const SVG = "http://www.w3.org/2000/svg";

  let seconds = 300; // samples kept by the server
  let span = 60; // seconds the sparklines show: the data there is, at least a minute
  let serverNow = Date.now(); // the server's clock, from its latest message
  let lastMessage = 0;
  let uptime = 0;
  const tiles = new Map(); // name -> tile

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function pct(x) {
    if (!(x > 0)) return "0%";
    if (x >= 0.995) return "100%";
    return (x * 100).toFixed(x < 0.1 ? 1 : 0) + "%";
  }

  function rate(x) {
    if (!(x > 0)) return "0";
    if (x >= 1000) return (x / 1000).toFixed(1) + "k";
    return x >= 10 ? x.toFixed(0) : x.toFixed(1);
  }

  function duration(s) {
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }

  function stat(key) {
    const box = el("div", "stat");
    const v = el("div", "v", "–");
    box.append(v, el("div", "k", key));
    return { box, v };
  }

  function createTile(name) {
    const root = el("article", "tile");
    root.dataset.breaker = name;
    const head = el("header");
    const title = el("div", "title");
    const h2 = el("h2", "", name);
    h2.title = name;
    const scope = el("div", "scope");
    title.append(h2, scope);
    const badge = el("span", "badge");
    head.append(title, badge);

    const stats = el("div", "stats");
    const fr = stat("failure rate");
    const sr = stat("slow rate");
    const cps = stat("calls/s");
    const wc = stat("in window");
    stats.append(fr.box, sr.box, cps.box, wc.box);

    const spark = svg("svg", {
      class: "spark",
      viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: "none",
      role: "img",
    });

    const chart = el("div", "chart");
    const peak = el("span", "peak");
    chart.append(spark, peak);

    const foot = el("footer");
    const meta = el("div", "meta");
    const actions = el("div", "actions");
    for (const [action, label] of [["open", "open"], ["disable", "disable"], ["reset", "reset"]]) {
      const b = el("button", "", label);
      b.type = "button";
      b.title = `${label} ${name} (needs the admin token)`;
      b.addEventListener("click", () => control(name, action));
      actions.append(b);
    }
    foot.append(meta, actions);
    root.append(head, stats, chart, foot);

    const tile = { name, root, scope, badge, fr, sr, cps, wc, spark, peak, meta, samples: [], view: null };
    tiles.set(name, tile);
    return tile;
  }

  function metaItem(key, value) {
    const s = el("span", "", key + " ");
    s.append(el("b", "", value));
    return s;
  }

  function updateTile(tile, view) {
    const previous = tile.view && tile.view.state;
    tile.view = view;
    tile.root.dataset.state = view.state;
    tile.scope.textContent = view.scope;
    tile.badge.textContent = STATE_TEXT[view.state] || view.state;
    tile.fr.v.textContent = pct(view.window.failure_rate);
    tile.fr.box.classList.toggle("bad", view.window.failure_rate >= 0.25);
    tile.sr.v.textContent = pct(view.window.slow_rate);
    tile.sr.box.classList.toggle("bad", view.window.slow_rate >= 0.25);
    const last = tile.samples[tile.samples.length - 1];
    tile.cps.v.textContent = last ? rate(last.calls) : "0";
    tile.wc.v.textContent = String(view.window.calls);
    const items = [];
    if (view.state !== "closed") {
      // How long it has been in this state, as far as the samples tell.
      let i = tile.samples.length;
      while (i > 0 && tile.samples[i - 1].state === view.state) i--;
      if (i < tile.samples.length) {
        const held = Math.max(0, Math.round((serverNow - tile.samples[i].t) / 1000) + 1);
        items.push(metaItem(STATE_TEXT[view.state] || view.state, "for " + duration(held)));
      }
    }
    items.push(metaItem("epoch", String(view.epoch)));
    items.push(metaItem("failures in a row", String(view.consecutive_failures)));
    if (view.state === "half_open" || view.probes_in_flight > 0) {
      items.push(metaItem("probes", String(view.probes_in_flight)));
    }
    if (last && last.rejected > 0) items.push(metaItem("rejected/s", rate(last.rejected)));
    if (view.ramping) items.push(metaItem("ramping", "yes"));
    if (view.fleet) items.push(metaItem("fleet", view.fleet.shared ? "shared" : "local"));
    tile.meta.replaceChildren(...items);
    if (previous && previous !== view.state) {
      tile.root.classList.remove("flash");
      void tile.root.offsetWidth; // restart the animation
      tile.root.classList.add("flash");
    }
  }

  function x(t) {
    return W - ((serverNow - t) / 1000) * (W / span);
  }

  function drawSpark(tile) {
    const s = tile.samples;
    const nodes = [];
    for (const f of [0.25, 0.5, 0.75]) {
      nodes.push(svg("line", { class: "grid", x1: 0, x2: W, y1: H * f, y2: H * f }));
    }
    // State bands: one rectangle per run of a non-closed state.
    let run = null;
    const flush = () => {
      if (run && run.state !== "closed") {
        const x0 = Math.max(0, x(run.from));
        const x1 = Math.min(W, x(run.to));
        if (x1 > x0) {
          nodes.push(svg("rect", { class: "band-" + run.state, x: x0, y: 0, width: x1 - x0, height: H }));
        }
      }
    };
    for (const p of s) {
      if (run && run.state === p.state) {
        run.to = p.t;
      } else {
        flush();
        run = { state: p.state, from: p.t - 1000, to: p.t };
      }
    }
    flush();
    const top = Math.max(0, ...s.map((p) => p.calls));
    tile.peak.textContent = top > 0 ? `peak ${rate(top)}/s` : "";
    if (s.length > 1) {
      const max = Math.max(1, top) * 1.1;
      const y = (v) => H - 1 - (v / max) * (H - 6);
      let d = `M${x(s[0].t).toFixed(1)},${H}`;
      for (const p of s) d += `L${x(p.t).toFixed(1)},${y(p.calls).toFixed(1)}`;
      d += `L${x(s[s.length - 1].t).toFixed(1)},${H}Z`;
      nodes.push(svg("path", { class: "area", d }));
      // Failure rate of each second's calls (gaps where nothing ran).
      let f = "";
      let pen = false;
      for (const p of s) {
        if (p.calls > 0) {
          const fy = H - 2 - (p.failures / p.calls) * (H - 8);
          f += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${fy.toFixed(1)}`;
          pen = true;
        } else {
          pen = false;
        }
      }
      if (f) nodes.push(svg("path", { class: "fail", d: f }));
    }
    const title = svg("title");
    const last = s[s.length - 1];
    title.textContent = last
      ? `${tile.name}: ${rate(last.calls)} calls/s, ${pct(last.calls > 0 ? last.failures / last.calls : 0)} failed in the last second`
      : `${tile.name}: no samples yet`;
    nodes.push(title);
    tile.spark.replaceChildren(...nodes);
  }

  // Fits the sparklines' time axis to the data: from one minute up to all
  // the server keeps.
  function fitSpan() {
    let oldest = serverNow;
    for (const t of tiles.values()) if (t.samples.length) oldest = Math.min(oldest, t.samples[0].t);
    const next = Math.min(seconds, Math.max(60, Math.ceil((serverNow - oldest) / 60000) * 60));
    if (next !== span) {
      span = next;
      $("span").textContent = span >= 120 ? Math.round(span / 60) + " min" : span + " s";
    }
  }

  function trim(tile) {
    const cutoff = serverNow - seconds * 1000;
    while (tile.samples.length && tile.samples[0].t < cutoff) tile.samples.shift();
  }

  // Makes the tiles match `views` (order included) and drops the others.
  function sync(views) {
    const container = $("tiles");
    const keep = new Set(views.map((v) => v.name));
    for (const [name, tile] of tiles) {
      if (!keep.has(name)) {
        tile.root.remove();
        tiles.delete(name);
      }
    }
    views.forEach((view, i) => {
      const tile = tiles.get(view.name) || createTile(view.name);
      if (container.children[i] !== tile.root) container.insertBefore(tile.root, container.children[i] || null);
    });
    $("empty").hidden = views.length > 0;
  }

  function summary(views, fleet) {
    const open = views.filter((v) => OPEN_STATES.has(v.state)).length;
    let total = 0;
    for (const t of tiles.values()) {
      const last = t.samples[t.samples.length - 1];
      if (last) total += last.calls;
    }
    const pill = (label, value, alert) => {
      const p = el("span", alert ? "pill alert" : "pill");
      p.append(el("b", "", value), " " + label);
      return p;
    };
    $("summary").replaceChildren(
      pill(views.length === 1 ? "breaker" : "breakers", String(views.length)),
      pill("open", String(open), open > 0),
      pill("calls/s", rate(total)),
      pill("uptime", duration(uptime)),
    );
    const f = $("fleet");
    if (fleet) {
      f.hidden = false;
      f.classList.toggle("degraded", fleet.degraded);
      f.replaceChildren(
        "fleet ",
        el("b", "", fleet.instance),
        fleet.degraded ? " · " : " · sync ",
        el("b", "", fleet.degraded ? "store unreachable" : fleet.last_sync_latency_ms.toFixed(1) + " ms"),
      );
    } else {
      f.hidden = true;
    }
  }

  function received(message) {
    lastMessage = Date.now();
    if (typeof message.time === "number") serverNow = message.time;
    if (typeof message.uptime_seconds === "number") uptime = message.uptime_seconds;
    setConn("live");
  }

  function onHistory(m) {
    received(m);
    seconds = m.seconds || seconds;
    sync(m.breakers);
    for (const view of m.breakers) {
      const tile = tiles.get(view.name);
      tile.samples = (m.history && m.history[view.name]) || [];
      trim(tile);
    }
    fitSpan();
    for (const view of m.breakers) {
      const tile = tiles.get(view.name);
      updateTile(tile, view);
      drawSpark(tile);
    }
    summary(m.breakers, m.fleet);
  }

  function onSnapshot(m) {
    received(m);
    sync(m.breakers);
    for (const b of m.breakers) {
      const tile = tiles.get(b.name);
      const last = tile.samples[tile.samples.length - 1];
      if (b.sample && (!last || b.sample.t > last.t)) tile.samples.push(b.sample);
      trim(tile);
    }
    fitSpan();
    for (const b of m.breakers) {
      const tile = tiles.get(b.name);
      updateTile(tile, b);
      drawSpark(tile);
    }
    summary(m.breakers, m.fleet);
  }

  function onTransition(m) {
    lastMessage = Date.now();
    const tile = tiles.get(m.name);
    if (!tile) return;
    updateTile(tile, m.breaker);
    summary([...tiles.values()].map((t) => t.view).filter(Boolean), m.breaker.fleet);
  }

  function setConn(status) {
    const c = $("conn");
    if (c.dataset.status === status) return;
    c.dataset.status = status;
    c.querySelector("span").textContent = status;
  }

  let toastTimer = 0;
  function toast(text, isError) {
    const t = $("toast");
    t.textContent = text;
    t.classList.toggle("err", !!isError);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), 4000);
  }

  async function control(name, action) {
    const token = $("token").value.trim();
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    try {
      const r = await fetch(`/api/breakers/${encodeURIComponent(name)}/${action}`, { method: "POST", headers });
      const body = await r.json().catch(() => ({}));
      if (r.ok) {
        toast(`${name}: ${STATE_TEXT[body.state] || body.state}`);
        if (body.breaker && tiles.has(name)) updateTile(tiles.get(name), body.breaker);
      } else {
        toast(`${name}: ${body.error || r.status + " " + r.statusText}`, true);
      }
    } catch (e) {
      toast(`${name}: the admin listener did not answer (${e})`, true);
    }
  }

  // Active drills (fault injection on a route), from /api/faults.
  function faultsOf(f) {
    const parts = [];
    const add = (r, what) => {
      if (r > 0) parts.push(`${what} ${Math.round(r * 1000) / 10}%`);
    };
    if (f.latency_rate > 0) parts.push(`latency ${Math.round(f.latency_rate * 1000) / 10}% (${f.latency})`);
    add(f.abort_rate, `abort ${f.abort_status || 503}`);
    add(f.error_rate, "error 500");
    add(f.reset_rate, "reset");
    add(f.stall_rate, "stall");
    return parts.join(" · ");
  }

  function showDrills(list) {
    const box = $("drills");
    const active = list.filter((f) => f.active);
    box.replaceChildren(
      ...active.map((f) => {
        const d = el("div", "drill");
        d.dataset.drill = f.route;
        d.append("drill on route ", el("b", null, f.route), `: ${faultsOf(f)}`);
        if (f.expires_in_ms != null) d.append(` · ends in ${duration(Math.ceil(f.expires_in_ms / 1000))}`);
        d.append(` · ${f.injected} of ${f.drawn} requests hit`);
        return d;
      })
    );
    box.hidden = active.length === 0;
  }

  async function pollDrills() {
    try {
      const r = await fetch("/api/faults", { cache: "no-store" });
      if (r.ok) showDrills(await r.json());
    } catch (err) {
      console.error("ripcord dashboard: drills", err);
    }
  }

  function connect() {
    const es = new EventSource("/api/events");
    const on = (type, f) =>
      es.addEventListener(type, (e) => {
        try {
          f(JSON.parse(e.data));
        } catch (err) {
          console.error("ripcord dashboard: bad event", type, err);
        }
      });
    on("history", onHistory);
    on("snapshot", onSnapshot);
    on("transition", onTransition);
    es.addEventListener("error", () => setConn(es.readyState === EventSource.CLOSED ? "offline" : "reconnecting"));
    return es;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const tokenInput = $("token");
    tokenInput.value = sessionStorage.getItem("ripcord-admin-token") || "";
    tokenInput.addEventListener("change", () => sessionStorage.setItem("ripcord-admin-token", tokenInput.value));
    let es = connect();
    pollDrills();
    setInterval(pollDrills, 2000);
    setInterval(() => {
      if (es.readyState === EventSource.CLOSED) {
        es = connect();
      } else if (lastMessage && Date.now() - lastMessage > 3500) {
        setConn("stale");
      }
    }, 1000);
  });
})();
