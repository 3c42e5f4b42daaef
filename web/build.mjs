// Builds web/dist from web/src and the wasm-bindgen output of worker-wasm:
//   dist/index.html, dashboard.html, profile.html, style.css     the pages (common/icon.svg inline)
//   dist/volunteer.js, compute-worker.js, dashboard.js, profile.js (+ .map)   bundles (esbuild)
//   dist/wasm/worker_wasm.<variant>.<sha>.wasm      each kernel build, content-addressed
//   dist/wasm-manifest.json                         what the volunteer bundle also embeds
//
// esbuild neither copies the .wasm nor rewrites wasm-bindgen's `new URL(.., import.meta.url)`,
// so the files are copied here and the page passes a compiled module to `init`. Their
// SHA-256 is computed here and embedded in the volunteer bundle, which checks it before
// compiling (see src/volunteer/wasm-loader.js).
//
//   node build.mjs [--no-sourcemap] [--no-minify] [--allow-missing-wasm]

import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "dist");
const pkgRoot = resolve(process.env.WORKER_WASM_DIR ?? join(here, "..", "worker-wasm"));
const args = new Set(process.argv.slice(2));
const sourcemap = !args.has("--no-sourcemap");
const minify = !args.has("--no-minify");

/** Fastest first; the page picks the first one the browser validates. */
const VARIANTS = ["relaxed", "simd", "scalar"];

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "wasm"), { recursive: true });

const manifest = { variants: {} };
const glue = {};
for (const variant of VARIANTS) {
  const dir = join(pkgRoot, `pkg-${variant}`);
  const js = join(dir, "worker_wasm.js");
  const wasm = join(dir, "worker_wasm_bg.wasm");
  if (!existsSync(js) || !existsSync(wasm)) continue;
  const bytes = readFileSync(wasm);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const file = `wasm/worker_wasm.${variant}.${sha256.slice(0, 12)}.wasm`;
  copyFileSync(wasm, join(dist, file));
  manifest.variants[variant] = { file, sha256, bytes: bytes.length };
  glue[variant] = js;
}
if (Object.keys(glue).length === 0) {
  const msg = `no worker-wasm build found under ${pkgRoot}/pkg-{${VARIANTS.join(",")}} (run make wasm)`;
  if (!args.has("--allow-missing-wasm")) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(`warning: ${msg}; the page will say it cannot compute`);
}
writeFileSync(join(dist, "wasm-manifest.json"), JSON.stringify(manifest, null, 2) + "\n");

/** `brain:wasm-variants`: the wasm-bindgen glue of every shipped build, keyed by variant. */
const variantsPlugin = {
  name: "wasm-variants",
  setup(b) {
    b.onResolve({ filter: /^brain:wasm-variants$/ }, () => ({ path: "wasm-variants", namespace: "brain" }));
    b.onLoad({ filter: /.*/, namespace: "brain" }, () => {
      const lines = Object.entries(glue).map(
        ([v, path], i) => `import init${i}, * as api${i} from ${JSON.stringify(path)};`,
      );
      const entries = Object.keys(glue).map((v, i) => `${JSON.stringify(v)}: { init: init${i}, api: api${i} }`);
      return {
        contents: `${lines.join("\n")}\nexport const variants = { ${entries.join(", ")} };\n`,
        resolveDir: here,
      };
    });
  },
};

const result = await build({
  entryPoints: {
    volunteer: join(src, "volunteer", "main.js"),
    "compute-worker": join(src, "volunteer", "compute-worker.js"),
    dashboard: join(src, "dashboard", "main.js"),
    profile: join(src, "profile", "main.js"),
  },
  outdir: dist,
  bundle: true,
  // Classic scripts and classic workers: the widest browser support, no module workers needed.
  format: "iife",
  target: ["chrome100", "firefox100", "safari15"],
  minify,
  sourcemap: sourcemap ? "linked" : false,
  metafile: true,
  define: { __BRAIN_WASM__: JSON.stringify(manifest) },
  plugins: [variantsPlugin],
  logLevel: "warning",
  // wasm-bindgen's default path uses import.meta.url; the page always passes a module.
  logOverride: { "empty-import-meta": "silent" },
});

// The pages' icon, inline (common/icon.svg as a data URL): a page that names no icon makes the
// browser ask for /favicon.ico, a 404 in every visitor's console.
const svg = readFileSync(join(src, "common", "icon.svg"), "utf8").trim();
const icon = `<link rel="icon" href="data:image/svg+xml,${svg.replace(/[<>#]/g, (c) => encodeURIComponent(c))}">`;
for (const [page, out] of [["volunteer", "index.html"], ["dashboard", "dashboard.html"], ["profile", "profile.html"]]) {
  const html = readFileSync(join(src, page, "index.html"), "utf8");
  writeFileSync(join(dist, out), html.replace(/<!-- brain:icon [^>]*-->/, icon));
}
copyFileSync(join(src, "common", "style.css"), join(dist, "style.css"));

let total = 0;
for (const [file, out] of Object.entries(result.metafile.outputs)) {
  if (file.endsWith(".map")) continue;
  total += out.bytes;
  console.log(`  ${file.replace(`${here}/`, "")}  ${(out.bytes / 1024).toFixed(1)} kB`);
}
for (const [v, e] of Object.entries(manifest.variants)) {
  console.log(`  dist/${e.file}  ${(e.bytes / 1024).toFixed(1)} kB  (${v})`);
}
const css = statSync(join(dist, "style.css")).size;
console.log(`built ${dist}: ${(total / 1024).toFixed(1)} kB of JavaScript, ${(css / 1024).toFixed(1)} kB CSS; kernels: ${Object.keys(manifest.variants).join(", ") || "none"}`);
