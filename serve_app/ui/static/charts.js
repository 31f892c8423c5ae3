// Hand-written SVG charts: grouped bars and a step line. A charting library would be larger
// than the three charts the viewer draws, and nothing has to be fetched or built.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 760, H = 260, PAD = { l: 56, r: 12, t: 12, b: 58 };

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function frame(title, max, fmt) {
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    svg.appendChild(el("title", {}, title));
    const plotH = H - PAD.t - PAD.b;
    for (let i = 0; i <= 4; i++) {
      const y = PAD.t + plotH - (plotH * i) / 4;
      svg.appendChild(el("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "axis",
        "stroke-opacity": i ? 0.25 : 1 }));
      svg.appendChild(el("text", { x: PAD.l - 6, y: y + 4, "text-anchor": "end" },
        fmt((max * i) / 4)));
    }
    return svg;
  }

  function legend(series) {
    const div = document.createElement("div");
    div.className = "legend";
    for (const s of series) {
      const span = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = s.color;
      span.append(i, s.name);
      div.appendChild(span);
    }
    return div;
  }

  // labels: category names; series: [{name, color, values}] (one value per label).
  function bars(container, title, labels, series, fmt = (v) => Math.round(v).toLocaleString()) {
    container.replaceChildren();
    if (!labels.length) { container.textContent = "Nothing to draw yet."; return; }
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.map((v) => v || 0))));
    const svg = frame(title, max, fmt);
    const plotW = W - PAD.l - PAD.r, plotH = H - PAD.t - PAD.b;
    const group = plotW / labels.length;
    const barW = Math.min(36, Math.max(2, (group * 0.8) / series.length));
    labels.forEach((label, i) => {
      const x0 = PAD.l + i * group + (group - barW * series.length) / 2;
      series.forEach((s, j) => {
        const v = s.values[i] || 0, h = (plotH * v) / max;
        const r = el("rect", { x: x0 + j * barW, y: PAD.t + plotH - h, width: barW - 1, height: h,
          fill: s.color });
        r.appendChild(el("title", {}, `${label} · ${s.name}: ${fmt(v)}`));
        svg.appendChild(r);
      });
      const tx = x0 + (barW * series.length) / 2, ty = H - PAD.b + 14;
      svg.appendChild(el("text", { x: tx, y: ty, "text-anchor": "end",
        transform: `rotate(-35 ${tx} ${ty})` }, label.length > 16 ? label.slice(0, 15) + "…" : label));
    });
    container.append(svg, legend(series));
  }

  // points: [{t: Date, v: number}] in time order, drawn as a step line up to now.
  function steps(container, title, points, color) {
    container.replaceChildren();
    if (!points.length) { container.textContent = "Nothing to draw yet."; return; }
    // At least 4 so that the four grid lines of a small count fall on whole numbers.
    const max = niceMax(Math.max(4, ...points.map((p) => p.v)));
    const svg = frame(title, max, (v) => (+v.toFixed(1)).toLocaleString());
    const plotW = W - PAD.l - PAD.r, plotH = H - PAD.t - PAD.b;
    const t0 = points[0].t.getTime(), t1 = Math.max(Date.now(), t0 + 60000);
    const X = (t) => PAD.l + (plotW * (t - t0)) / (t1 - t0);
    const Y = (v) => PAD.t + plotH - (plotH * v) / max;
    let d = `M ${X(t0)} ${Y(0)}`;
    let prev = 0;
    for (const p of points) { d += ` L ${X(p.t.getTime())} ${Y(prev)} L ${X(p.t.getTime())} ${Y(p.v)}`; prev = p.v; }
    d += ` L ${X(t1)} ${Y(prev)}`;
    svg.appendChild(el("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    for (const p of points) {
      const c = el("circle", { cx: X(p.t.getTime()), cy: Y(p.v), r: 3, fill: color });
      c.appendChild(el("title", {}, `${p.t.toLocaleString()}: ${p.v}`));
      svg.appendChild(c);
    }
    for (const t of [t0, t1]) {
      svg.appendChild(el("text", { x: X(t), y: H - PAD.b + 16, "text-anchor": t === t0 ? "start" : "end" },
        new Date(t).toLocaleString()));
    }
    container.append(svg);
  }

  return { bars, steps };
})();
