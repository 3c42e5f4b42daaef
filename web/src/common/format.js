// Formatting shared by both pages: numbers people read at a glance.

export function formatGflops(g) {
  if (!Number.isFinite(g) || g <= 0) return "–";
  if (g >= 100) return `${g.toFixed(0)} GFLOP/s`;
  if (g >= 10) return `${g.toFixed(1)} GFLOP/s`;
  if (g >= 0.1) return `${g.toFixed(2)} GFLOP/s`;
  // A trickle (small tiles, a slow device) is still a figure: two significant digits.
  return `${g.toPrecision(2)} GFLOP/s`;
}

export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "–";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${String(m % 60).padStart(2, "0")} min`;
}

export function formatCount(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
