// A daily bar chart as SVG: one bar per day, labelled for screen readers (a table of the same figures follows it).
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// points: [{label, value}] (value a number); title names the series
export function barChart(points, title, unit) {
  const width = 640;
  const height = 200;
  const pad = { top: 12, right: 8, bottom: 28, left: 48 };
  const max = Math.max(1, ...points.map((p) => p.value));
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const step = innerW / Math.max(1, points.length);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart", "aria-label": title });
  root.append(svg("title", {}, title));
  for (const fraction of [0, 0.5, 1]) {
    const y = pad.top + innerH * (1 - fraction);
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", class: "axis" },
      `${Math.round(max * fraction).toLocaleString("en-US")}`));
  }
  points.forEach((point, index) => {
    const barH = (point.value / max) * innerH;
    const x = pad.left + index * step + step * 0.15;
    const bar = svg("rect", {
      x, y: pad.top + innerH - barH, width: Math.max(1, step * 0.7), height: barH, class: "bar",
    });
    bar.append(svg("title", {}, `${point.label}: ${point.value.toLocaleString("en-US")} ${unit}`));
    root.append(bar);
    if (points.length <= 16 || index % Math.ceil(points.length / 10) === 0) {
      root.append(svg("text", { x: x + step * 0.35, y: height - 10, "text-anchor": "middle", class: "axis" },
        point.label.slice(-2)));
    }
  });
  return root;
}

export function progressBar(label, usedPercent) {
  const value = Math.max(0, Math.min(100, Number(usedPercent) || 0));
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = value;
  bar.setAttribute("aria-label", label);
  if (value >= 100) bar.classList.add("over");
  else if (value >= 80) bar.classList.add("high");
  return bar;
}
