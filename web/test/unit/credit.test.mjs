import { test } from "node:test";
import assert from "node:assert/strict";
import {
  cleanTransferCode,
  formatComputeTime,
  formatCredit,
  formatRank,
  profileHref,
  transferCodeFromHash,
  transferLink,
  UnreadCredit,
} from "../../src/common/credit.js";

test("credit shows enough digits to move, in the server's unit", () => {
  assert.equal(formatCredit(0), "0 GFLOP");
  assert.equal(formatCredit(-1), "0 GFLOP");
  assert.equal(formatCredit(NaN), "0 GFLOP");
  assert.equal(formatCredit(0.0335), "0.0335 GFLOP");
  assert.equal(formatCredit(2.5), "2.50 GFLOP");
  assert.equal(formatCredit(17.179869184), "17.2 GFLOP");
  assert.equal(formatCredit(123456.7), "123,457 GFLOP");
  assert.equal(formatComputeTime(0), "0 s");
  assert.equal(formatComputeTime(2.25), "2.3 s");
  assert.equal(formatComputeTime(90), "1.5 min");
  assert.equal(formatComputeTime(5400), "1.5 h");
  assert.equal(formatRank(1), "#1");
  assert.equal(formatRank(12345), "#12,345");
  assert.equal(formatRank(undefined), "not ranked yet");
  assert.equal(formatRank(null), "not ranked yet");
});

test("a transfer code is cleaned before it is sent: Crockford base32, any case, dashes or spaces", () => {
  assert.equal(cleanTransferCode("abcde-fghjk"), "ABCDE-FGHJK");
  assert.equal(cleanTransferCode(" ABCDE FGHJK "), "ABCDE-FGHJK");
  assert.equal(cleanTransferCode("0123456789"), "01234-56789");
  // Crockford's aliases (O for 0, I and L for 1) pass; the server maps them.
  assert.equal(cleanTransferCode("OIL00-00000"), "OIL00-00000");
  for (const bad of ["", "ABCD", "ABCDE-FGHJKM", "ABCDE-FGHJU", "ABCDE-FGH<K", "ABCDE_FGHJK", null, undefined, "é".repeat(10)]) {
    assert.equal(cleanTransferCode(bad), null, String(bad));
  }
});

test("a transfer link carries its code in the fragment only, and a hostile fragment gives no code", () => {
  const link = transferLink("ABCDE-FGHJK", "https://grid.example/?server=https%3A%2F%2Fother.example");
  assert.equal(link, "https://grid.example/?server=https%3A%2F%2Fother.example#transfer=ABCDE-FGHJK");
  assert.equal(new URL(link).search, "?server=https%3A%2F%2Fother.example");
  assert.equal(transferCodeFromHash("#transfer=ABCDE-FGHJK"), "ABCDE-FGHJK");
  assert.equal(transferCodeFromHash("#transfer=abcde%20fghjk"), "ABCDE-FGHJK");
  for (const bad of ["", "#", "#transfer=", "#transfer=%E0%A4%A", "#transfer=<script>alert(1)</script>", `#transfer=${"A".repeat(100)}`, "#transfer=ABCDE-FGHJK&x=1", "#other=ABCDE-FGHJK"]) {
    assert.equal(transferCodeFromHash(bad), null, bad);
  }
});

test("a profile link names the server only when it is not the page's own", () => {
  const base = "https://grid.example/app/";
  assert.equal(profileHref("ab-12", "https://grid.example", "https://grid.example", base), "/app/profile?id=ab-12");
  assert.equal(
    profileHref("ab-12", "https://other.example", "https://grid.example", base),
    "/app/profile?id=ab-12&server=https%3A%2F%2Fother.example",
  );
});

test("the credit added on top of a read is never more than the server counted", () => {
  let t = 0;
  const u = new UnreadCredit(() => t);
  // Before any read: every accepted result adds (the first answer replaces them all).
  u.sent(1);
  t = 1;
  assert.equal(u.accepted(1, 2e9), true);
  assert.equal(u.tiles, 1);
  assert.equal(u.gflop, 2);
  // A read is asked for while results 2 and 3 are on their way; its answer comes at t = 5.
  u.sent(2);
  t = 2;
  u.sent(3);
  t = 5;
  u.answered();
  assert.equal(u.tiles, 0, "the answer counts what was acknowledged before it");
  // Result 2's acknowledgement comes after the answer, which may have counted it already: not
  // added, and one more read is wanted, once.
  t = 6;
  assert.equal(u.accepted(2, 1e9), false);
  assert.equal(u.tiles, 0);
  assert.equal(u.wantsRead, true);
  u.settling();
  assert.equal(u.wantsRead, false);
  assert.equal(u.accepted(3, 1e9), false);
  assert.equal(u.wantsRead, false, "one read follows, not one per acknowledgement");
  // A result sent after the answer cannot be in it: added.
  u.sent(4);
  t = 7;
  assert.equal(u.accepted(4, 1e9), true);
  assert.equal(u.tiles, 1);
  // The settling read answers; it wants no other.
  t = 8;
  u.answered(true);
  assert.equal(u.wantsRead, false);
  assert.equal(u.tiles, 0);
  // Refused results and those of an ended connection are forgotten.
  u.sent(5);
  u.refused(5);
  u.sent(6);
  u.connected();
  assert.equal(u.sentAt.size, 0);
  t = 9;
  assert.equal(u.accepted(6, 1e9), false, "an acknowledgement of an unknown result is not added");
});
