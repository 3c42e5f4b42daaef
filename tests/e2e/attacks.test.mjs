// The attacks of docs/security.md ("Attacks and their defences"), each mounted against the
// real server with the official socket.io-client; every test asserts that the defence holds.
// Sections are numbered as in docs/security.md. Bounds on memory or time are loose enough
// that they cannot flake (e.g. the server's RSS read from /proc), never timing assertions.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as h from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- 1. Job killing -------------------------------------------------------------------------



// ---- 2. Task amplification ------------------------------------------------------------------



// ---- 3. Memory amplification in JSON --------------------------------------------------------



// ---- 4. A hostile page enlists its visitors -------------------------------------------------



// ---- 5. Forged addresses --------------------------------------------------------------------



// ---- 6. Re-send amplification ---------------------------------------------------------------



// ---- 7. Lease hoarding ----------------------------------------------------------------------



// ---- 8. Tiles that can never be returned ----------------------------------------------------



// ---- 9. Non-finite bounds -------------------------------------------------------------------



// ---- 10. Unbounded metric labels ------------------------------------------------------------



// ---- 12. Stale standing ---------------------------------------------------------------------



// (11, the dashboard handing its token to any server, is a browser test: web/test/e2e/.)
